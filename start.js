// Start the web UI on a free port and hand its URL to Pinokio's menu ("Open Web UI").
// `daemon: true` keeps the app running after the last step. The app binds 127.0.0.1 and prints
// "* Running on local URL:  http://127.0.0.1:PORT"; the `on` regex catches that line (Pinokio
// scans a rolling, ANSI-stripped window of the output) and the next step stores it as `url`
// (the variable name Pinokio's sharing also uses).
module.exports = {
  daemon: true,
  run: [
    {
      method: "shell.run",
      params: {
        venv: "env",
        path: ".",
        env: {
          // {{port}} is the next free port, fresh on every use: it is used once, here
          GRADIO_SERVER_PORT: "{{port}}",
          GRADIO_ANALYTICS_ENABLED: "False",
          HF_HUB_DISABLE_TELEMETRY: "1",
          // Pinokio sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 for every app, which makes any
          // torch.load without an explicit weights_only unpickle arbitrary code; QTinker wants
          // torch's safe default back
          TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD: "0"
        },
        message: "python app/app.py",
        on: [{ event: "/(http:\\/\\/[0-9.:]+)/", done: true }]
      }
    },
    {
      method: "local.set",
      params: { url: "{{input.event[1]}}" }
    }
  ]
}
