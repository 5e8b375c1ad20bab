// Runs QTinker's launcher scripts inside Pinokio's real kernel (npm `pinokiod`, pinned in
// package.json), headless, the way the Pinokio app runs them. See /work/shared/notes/pinokio.md §4.
//
// One kernel per process: HOME and PINOKIO_HOME are process-global, so every test file that needs a
// kernel calls startKernel() once in `before` and stop() in `after`.
//
// The temp PINOKIO_HOME gets shims instead of Pinokio's downloaded toolchain, on the PATH every
// shell gets (bin/miniconda/bin): a no-op `conda`, `python`/`python3`/`python3.X` (the Python behind
// the tests' venv) and a `uv` wrapper that may use that system Python (Pinokio forces
// UV_PYTHON_PREFERENCE=only-managed, which downloads Python from GitHub).
"use strict"
const fs = require("fs")
const os = require("os")
const path = require("path")
const http = require("http")
const net = require("net")
const { execFileSync } = require("child_process")

const REPO = path.resolve(__dirname, "..", "..")
const APP_NAME = "qtinker"
// never copied into the Pinokio home: venvs, VCS data, node deps, logs and user data
const SKIP = new Set([".git", "env", ".venv", "node_modules", "logs", "cache", "outputs", ".pytest_cache",
  "test-artifacts", "__pycache__", ".gradio", "build", "dist"])

// The venv whose Python has QTinker's dependencies: the one running the tests (the pytest wrapper
// passes its sys.prefix), else the repo's env/ (tests/run.sh) or .venv/.
function testVenv() {
  const candidates = [process.env.QTINKER_TEST_VENV, path.join(REPO, "env"), path.join(REPO, ".venv")]
  for (const dir of candidates) {
    if (dir && fs.existsSync(path.join(dir, "bin", "python"))) return path.resolve(dir)
  }
  throw new Error("no venv with QTinker's dependencies: set QTINKER_TEST_VENV or run tests/run.sh")
}

// The real interpreter behind a venv and its python3.X name, for the python / uv shims.
function basePython(venv) {
  const out = execFileSync(path.join(venv, "bin", "python"), ["-c",
    "import sys, os; print(os.path.realpath(os.path.join(sys.base_prefix, 'bin', 'python3'))); print('python%d.%d' % sys.version_info[:2])"])
  const [file, name] = out.toString().trim().split("\n")
  return { file, name }
}

function which(cmd) {
  for (const dir of (process.env.PATH || "").split(path.delimiter)) {
    const p = path.join(dir, cmd)
    try { fs.accessSync(p, fs.constants.X_OK); return p } catch (_) { }
  }
  return null
}

function writeExec(file, text) {
  fs.writeFileSync(file, text)
  fs.chmodSync(file, 0o755)
}

function copyLauncher(dest) {
  fs.cpSync(REPO, dest, {
    recursive: true,
    filter: (src) => !SKIP.has(path.basename(src)),
  })
}

// Temp HOME (Pinokio's store: ~/.pinokio/config.json) and PINOKIO_HOME with shims.
function makeHome() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "qtinker-pinokio-"))
  const home = path.join(root, "pinokio")
  const user = path.join(root, "user")
  fs.mkdirSync(path.join(user, ".pinokio"), { recursive: true })
  fs.writeFileSync(path.join(user, ".pinokio", "config.json"), JSON.stringify({ home }))
  const shims = path.join(home, "bin", "miniconda", "bin")
  fs.mkdirSync(shims, { recursive: true })
  const venv = testVenv()
  const base = basePython(venv)
  const python = base.file
  for (const name of ["python", "python3", base.name]) fs.symlinkSync(python, path.join(shims, name))
  // `conda shell.bash hook` must print something eval-able that makes later `conda ...` no-ops
  writeExec(path.join(shims, "conda"), "#!/bin/sh\nif [ \"$1\" = shell.bash ]; then echo 'conda() { :; }'; fi\nexit 0\n")
  const uv = [path.join(venv, "bin", "uv"), which("uv")].find((p) => p && fs.existsSync(p))
  if (uv) {
    // QTINKER_TEST_TORCH_FIND_LINKS (full-install test only, for machines that cannot reach
    // download.pytorch.org): serve torch from a local wheel folder plus PyPI instead
    const links = process.env.QTINKER_TEST_TORCH_FIND_LINKS || ""
    writeExec(path.join(shims, "uv"), [
      "#!/bin/bash",
      "args=()",
      "for a in \"$@\"; do",
      `  if [ -n "${links}" ] && [[ "$a" == https://download.pytorch.org/whl/* ]]; then args+=(https://pypi.org/simple --find-links "${links}"); else args+=("$a"); fi`,
      "done",
      // a TLS-intercepting proxy needs the system certificate store (Pinokio strips *SSL* vars)
      "export UV_SYSTEM_CERTS=1",
      `UV_PYTHON_PREFERENCE=only-system exec "${uv}" "\${args[@]}"`,
      "",
    ].join("\n"))
  }
  return { root, home, user, shims, venv, python, uv }
}

let Kernel = null

class Harness {
  constructor() {
    this.listeners = new Set()
  }

  // Create the temp home, copy the launcher to api/qtinker, start the kernel.
  async start() {
    this.paths = makeHome()
    process.env.HOME = this.paths.user
    process.env.PINOKIO_HOME = this.paths.home
    this.dir = path.join(this.paths.home, "api", APP_NAME)
    fs.mkdirSync(path.dirname(this.dir), { recursive: true })
    copyLauncher(this.dir)
    Kernel = Kernel || require("pinokiod/kernel")
    this.kernel = new Kernel({ store: { home: this.paths.home } })
    // the kernel logs a lot to the console; keep the test output readable
    this.quiet()
    await this.kernel.init()
    await this.kernel.sysReady
    this.kernel.api.listen(APP_NAME, (packet) => this.onPacket(packet))
    return this
  }

  quiet() {
    if (process.env.QTINKER_LAUNCHER_VERBOSE) return
    this.savedConsole = { log: console.log, warn: console.warn, info: console.info }
    console.log = () => { }
    console.info = () => { }
    console.warn = () => { }
  }

  onPacket(packet) {
    for (const fn of this.listeners) fn(packet)
  }

  script(name) {
    return path.join(this.dir, name)
  }

  // Run a script as the UI does; resolve when it finishes (disconnect / "stop" event), when a
  // daemon reports "Started", on an error packet, or on timeout (an unknown method sends nothing).
  run(name, { timeoutMs = 60000, input = {} } = {}) {
    const file = this.script(name)
    const packets = []
    return new Promise((resolve) => {
      let settled = false
      const finish = (outcome, extra = {}) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        this.listeners.delete(listen)
        resolve({ outcome, packets, text: terminalText(packets), ...extra })
      }
      const listen = (p) => {
        if (!belongsTo(p, file)) return
        packets.push(p)
        if (p.type === "error") finish("error", { error: p })
        else if (p.type === "disconnect") finish("done")
        else if (p.type === "start" && p.data && p.data.title === "Started") finish("started")
      }
      const timer = setTimeout(() => finish("timeout"), timeoutMs)
      this.listeners.add(listen)
      this.kernel.api.process({ uri: `~/api/${APP_NAME}/${name}`, input }, () => { })
    })
  }

  // Wait until a finished non-daemon script is no longer marked running.
  async idle(name, timeoutMs = 10000) {
    const file = this.script(name)
    const end = Date.now() + timeoutMs
    while (this.kernel.api.running[file] && Date.now() < end) await sleep(100)
    return !this.kernel.api.running[file]
  }

  running(name) {
    return Boolean(this.kernel.api.running[this.script(name)])
  }

  local(name) {
    return this.kernel.memory.local[this.script(name)] || {}
  }

  // The menu exactly as the server builds it: pinokio.js's menu(kernel, kernel.info).
  async menu() {
    const launcher = await this.kernel.api.launcher(APP_NAME)
    const script = launcher.script
    return typeof script.menu === "function" ? await script.menu(this.kernel, this.kernel.info) : script.menu
  }

  async stopScript(name) {
    await this.kernel.api.stop({ params: { uri: this.script(name) } })
  }

  async close() {
    try {
      for (const file of Object.keys(this.kernel.api.running || {})) {
        if (this.kernel.api.running[file]) await this.kernel.api.stop({ params: { uri: file } }).catch(() => { })
      }
      this.kernel.shell.reset()
    } catch (_) { }
    clearTimeout(this.kernel.refresh_interval)
    clearInterval(this.kernel.refresh_interval)
    if (process.env.QTINKER_LAUNCHER_KEEP) return
    const rm = () => fs.rmSync(this.paths.root, { recursive: true, force: true })
    rm()
    // the kernel still writes a few logs after its scripts stop: remove them again on exit
    process.once("exit", rm)
  }
}

function belongsTo(packet, file) {
  const id = String(packet.id || "").split("?")[0]
  return id === file || (packet.rpc && packet.rpc.parent && packet.rpc.parent.path === file)
}

function terminalText(packets) {
  return packets.filter((p) => p.type === "stream" && p.data && p.data.raw).map((p) => p.data.raw)
    .join("").replace(/\x1b\[[0-9;?]*[ -/]*[@-~]/g, "")
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

function httpGet(url, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, (res) => {
      res.resume()
      res.on("end", () => resolve(res.statusCode))
    })
    req.on("error", reject)
    req.setTimeout(timeoutMs, () => req.destroy(new Error("timeout")))
  })
}

// true when nothing accepts connections on 127.0.0.1:port
function portFree(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: "127.0.0.1", port })
    sock.on("connect", () => { sock.destroy(); resolve(false) })
    sock.on("error", () => resolve(true))
  })
}

module.exports = { Harness, REPO, APP_NAME, SKIP, httpGet, portFree, sleep, testVenv, terminalText }
