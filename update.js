// Update: pull the latest QTinker, then bring the venv in line with the new requirements.txt
// (the same dependency steps as install.js, from deps.js: torch for this machine first, then the
// pins, then a check). A pull without reinstalling leaves missing or stale packages behind.
// Models (bert_models/) and results (outputs/) are never touched.
const DEPS = require("./deps.js")

module.exports = {
  requires: DEPS.requires,
  run: [
    {
      method: "shell.run",
      params: { path: ".", message: "git pull" }
    },
    ...DEPS.run
  ]
}
