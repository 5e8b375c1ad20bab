// Reset: delete the venv (env/) so the next Install starts clean. Only env/ goes: downloaded and
// imported models (bert_models/) and every result (outputs/) stay where they are.
module.exports = {
  run: [
    {
      method: "fs.rm",
      params: { path: "env" }
    }
  ]
}
