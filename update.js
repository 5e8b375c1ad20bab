// Update: pull the latest QTinker, then bring the venv in line with the new requirements.txt
// (same dependency steps as install.js: torch for this machine first, then the pins, then a check).
// A pull without reinstalling leaves missing or stale packages behind.
// Models (bert_models/) and results (outputs/) are never touched.
// the same checks as install.js (tests/launcher keep the two identical)
const TORCH_CHECK = "python -c \"import torch; v = torch.__version__; print('torch', v, 'is installed'); " +
  "assert v.split('+')[0] == '2.13.0', 'QTinker needs torch 2.13.0: see the torch.js log above'\""
const CHECK = "python -c \"import torch, qtinker; from importlib.metadata import version as v; " +
  "gpu = 'CUDA/ROCm' if torch.cuda.is_available() else ('Apple MPS' if torch.backends.mps.is_available() else 'none, using the CPU'); " +
  "print('QTinker', qtinker.__version__, 'is installed: torch', torch.__version__, '| torchao', v('torchao'), " +
  "'| transformers', v('transformers'), '| gradio', v('gradio'), '| GPU:', gpu)\""

module.exports = {
  requires: { bundle: "python" },
  run: [
    {
      method: "shell.run",
      params: { path: ".", message: "git pull" }
    },
    // as in install.js: clear a stale torch.js run, install torch, check it
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
    {
      method: "shell.run",
      params: { venv: "env", path: ".", message: "uv pip install -r requirements.txt" }
    },
    {
      method: "shell.run",
      params: { venv: "env", path: ".", message: CHECK }
    }
  ]
}
