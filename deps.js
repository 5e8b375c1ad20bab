// The dependency steps shared by install.js and update.js (both `require` this file and run its
// steps in place): torch 2.13.0 built for this machine (torch.js), a check of it, then
// requirements.txt (exact pins, ending with `-e .`, so it runs from the repo root), then a check
// that everything imports. Run on its own from Pinokio, it reinstalls the dependencies into env/.
//
// Pinokio ignores exit codes: a step fails only when its output matches /error:/i. uv reports
// failures as "error: ...", and the two checks fail with "...Error: ..." (AssertionError,
// ModuleNotFoundError, PackageNotFoundError), so a broken install stops with the reason on screen.

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
      params: { venv: "env", path: ".", message: TORCH_CHECK }
    },
    // everything else, exactly as pinned (torch==2.13.0 is already satisfied by the build above)
    {
      method: "shell.run",
      params: { venv: "env", path: ".", message: "uv pip install -r requirements.txt" }
    },
    // prove it: import torch and qtinker, show versions and which GPU torch sees
    {
      method: "shell.run",
      params: { venv: "env", path: ".", message: CHECK }
    }
  ]
}
