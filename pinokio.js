// Pinokio's menu for QTinker. Re-evaluated after every finished step, so it follows the state:
// installing / updating / resetting -> that script's terminal; installed and running -> Open Web UI
// + Terminal; installed and idle -> Start, folders, Update, Install, Reset; otherwise -> Install.
// `info.*` paths are relative to this file (the repo root).
module.exports = {
  // only a schema gate: Pinokio 5.x accepts <= 5.0.0, later releases accept higher
  version: "5.0",
  title: "QTinker",
  description: "Shrink a big BERT into a small, fast model you can ship: download, distill, quantize (TorchAO), export.",
  menu: async (kernel, info) => {
    // install.js's last package step installs qtinker itself (`-e .`), which creates this command
    const installed = info.exists("env/bin/qtinker") || info.exists("env/Scripts/qtinker.exe")
    const running = {
      install: info.running("install.js"),
      start: info.running("start.js"),
      update: info.running("update.js"),
      reset: info.running("reset.js")
    }
    if (running.install) {
      return [{ default: true, icon: "fa-solid fa-plug", text: "Installing…", href: "install.js" }]
    }
    if (running.update) {
      return [{ default: true, icon: "fa-solid fa-rotate", text: "Updating…", href: "update.js" }]
    }
    if (running.reset) {
      return [{ default: true, icon: "fa-solid fa-broom", text: "Resetting…", href: "reset.js" }]
    }
    const folders = [{ icon: "fa-solid fa-box-archive", text: "Models folder", href: "bert_models", fs: true }]
    if (info.exists("outputs")) {
      folders.push({ icon: "fa-solid fa-folder-open", text: "Outputs folder", href: "outputs", fs: true })
    }
    const reset = {
      icon: "fa-regular fa-circle-xmark",
      text: "Reset",
      href: "reset.js",
      confirm: "Delete the Python environment (env/)? Your models (bert_models/) and results (outputs/) are kept. Run Install again afterwards."
    }
    if (installed && running.start) {
      const local = info.local("start.js")
      if (local && local.url) {
        return [
          { default: true, icon: "fa-solid fa-rocket", text: "Open Web UI", href: local.url },
          { icon: "fa-solid fa-terminal", text: "Terminal", href: "start.js" },
          ...folders
        ]
      }
      return [{ default: true, icon: "fa-solid fa-terminal", text: "Starting…", href: "start.js" }]
    }
    if (installed) {
      return [
        { default: true, icon: "fa-solid fa-power-off", text: "Start", href: "start.js" },
        ...folders,
        { icon: "fa-solid fa-rotate", text: "Update", href: "update.js" },
        { icon: "fa-solid fa-plug", text: "Install", href: "install.js" },
        reset
      ]
    }
    // not installed; a failed or partial install leaves env/ behind: offer Reset for a clean retry
    const menu = [{ default: true, icon: "fa-solid fa-plug", text: "Install", href: "install.js" }]
    if (info.exists("env")) {
      menu.push(reset)
    }
    return menu
  }
}
