// One-click install: a Python 3.11 venv in env/, torch 2.13.0 built for this machine (torch.js),
// then requirements.txt (exact pins, ending with `-e .`, so it runs from the repo root), then a
// check that everything imports. No logins, no manual steps. Models (bert_models/) and results
// (outputs/) are never touched.
// The dependency steps live in deps.js, shared with update.js.
const INTEL_MAC = "QTinker cannot run on an Intel Mac: it needs PyTorch 2.11 or newer (it installs torch 2.13.0 " +
  "for TorchAO 0.18), and PyTorch stopped publishing Intel-Mac builds after 2.2. Nothing was installed. " +
  "Use a Mac with Apple silicon (M1 or later), or a Windows or Linux PC."
const DEPS = require("./deps.js")

module.exports = {
  requires: DEPS.requires,
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
    // the dependency steps, shared with update.js: torch for this machine, the pins, checks
    ...DEPS.run,
    {
      method: "notify",
      params: { html: "QTinker is installed. Click <b>Start</b> to open it." }
    }
  ]
}
