// One-click install: a Python 3.11 venv in env/, torch 2.13.0 built for this machine (torch.js),
// then requirements.txt (exact pins, ending with `-e .`, so it runs from the repo root), then a
// check that everything imports. No logins, no manual steps. Models (bert_models/) and results
// (outputs/) are never touched.
//
// Pinokio ignores exit codes: a step fails only when its output matches /error:/i. uv reports
// failures as "error: ...", and the two checks fail with "...Error: ..." (AssertionError,
// ModuleNotFoundError, PackageNotFoundError), so a broken install stops with the reason on screen.
const INTEL_MAC = "QTinker cannot run on an Intel Mac: it needs PyTorch 2.11 or newer (it installs torch 2.13.0 " +
  "for TorchAO 0.18), and PyTorch stopped publishing Intel-Mac builds after 2.2. Nothing was installed. " +
  "Use a Mac with Apple silicon (M1 or later), or a Windows or Linux PC."
// stops the install (AssertionError / ModuleNotFoundError match /error:/i) unless torch.js worked
const TORCH_CHECK = "python -c \"import torch; v = torch.__version__; print('torch', v, 'is installed'); " +
  "assert v.split('+')[0] == '2.13.0', 'QTinker needs torch 2.13.0: see the torch.js log above'\""
const CHECK = "python -c \"import torch, qtinker; from importlib.metadata import version as v; " +
  "gpu = 'CUDA/ROCm' if torch.cuda.is_available() else ('Apple MPS' if torch.backends.mps.is_available() else 'none, using the CPU'); " +
  "print('QTinker', qtinker.__version__, 'is installed: torch', torch.__version__, '| torchao', v('torchao'), " +
  "'| transformers', v('transformers'), '| gradio', v('gradio'), '| GPU:', gpu)\""

module.exports = {
  // Pinokio's Python bundle: conda, git, uv (no CUDA toolkit: the torch wheels bring their own)
  requires: { bundle: "python" },
  run: [
    // Intel Macs cannot run torch >= 2.3: explain and stop before creating anything
    {
      when: "{{platform === 'darwin' && arch !== 'arm64'}}",
      method: "log",
      params: { text: INTEL_MAC }
    },
    {
      when: "{{platform === 'darwin' && arch !== 'arm64'}}",
      method: "notify",
      params: { html: INTEL_MAC },
      next: null
    },
    // The venv. The pinned numpy, pandas and transformers need Python >= 3.11 (Pinokio's own
    // Python is 3.10), so uv creates it with a managed Python 3.11.
    {
      method: "shell.run",
      params: {
        venv: "env",
        venv_python: "3.11",
        path: ".",
        message: "python --version"
      }
    },
    // torch first, built for this GPU / platform. A child script that fails neither stops this
    // one nor ends: it stays "running", and script.start then skips it ("already running"). So
    // clear any stale run first, and check the result right after.
    {
      method: "kernel.api.stop",
      params: { uri: "{{path.resolve(cwd, 'torch.js')}}" }
    },
    {
      method: "script.start",
      params: {
        uri: "torch.js",
        params: { venv: "env", path: "." }
      }
    },
    {
      method: "shell.run",
      params: {
        venv: "env",
        path: ".",
        message: TORCH_CHECK
      }
    },
    // everything else, exactly as pinned (torch==2.13.0 is already satisfied by the build above)
    {
      method: "shell.run",
      params: {
        venv: "env",
        path: ".",
        message: "uv pip install -r requirements.txt"
      }
    },
    // prove it: import torch and qtinker, show versions and which GPU torch sees
    {
      method: "shell.run",
      params: {
        venv: "env",
        path: ".",
        message: CHECK
      }
    },
    {
      method: "notify",
      params: { html: "QTinker is installed. Click <b>Start</b> to open it." }
    }
  ]
}
