// Tier 0 (< 1 s, no kernel start): every step of every launcher script checked with Pinokio's own
// method resolver and template engine (npm pinokiod 5.3.28 and its jimini), plus the menu in every
// state with a stand-in `info`. tests/launcher/kernel.test.js then runs the scripts for real.
"use strict"
const test = require("node:test")
const assert = require("node:assert/strict")
const fs = require("fs")
const path = require("path")
const semver = require("semver")
const Api = require("pinokiod/kernel/api")
const Setup = require("pinokiod/kernel/bin/setup")
const Template = require("jimini")
const { REPO } = require("./harness.js")

const SCRIPTS = ["install.js", "start.js", "update.js", "reset.js", "torch.js", "deps.js"]
const load = (name) => {
  const file = path.join(REPO, name)
  delete require.cache[require.resolve(file)]
  return require(file)
}
const TORCH_PIN = fs.readFileSync(path.join(REPO, "requirements.txt"), "utf8").match(/^torch==(\S+)/m)[1]

// The machines the scripts must handle: Pinokio's template variables for each.
const nvidia = (driverVersion) => ({ controllers: [{ vendor: "NVIDIA", model: "NVIDIA GeForce RTX 4090", driverVersion }] })
const MACHINES = {
  "linux-cpu": { platform: "linux", arch: "x64", gpu: "none", graphics: { controllers: [] } },
  "linux-nvidia-575": { platform: "linux", arch: "x64", gpu: "nvidia", graphics: nvidia("575.64.03") },
  "linux-nvidia-580": { platform: "linux", arch: "x64", gpu: "nvidia", graphics: nvidia("580.65.06") },
  "linux-nvidia-unknown-driver": { platform: "linux", arch: "x64", gpu: "nvidia", graphics: { controllers: [] } },
  "linux-amd": { platform: "linux", arch: "x64", gpu: "amd", graphics: { controllers: [{ vendor: "Advanced Micro Devices, Inc. [AMD/ATI]" }] } },
  "linux-intel-gpu": { platform: "linux", arch: "x64", gpu: "intel corporation", graphics: { controllers: [{ vendor: "Intel Corporation" }] } },
  "win-nvidia-560": { platform: "win32", arch: "x64", gpu: "nvidia", graphics: nvidia("560.94") },
  "win-nvidia-581": { platform: "win32", arch: "x64", gpu: "nvidia", graphics: nvidia("581.29") },
  "win-amd": { platform: "win32", arch: "x64", gpu: "amd", graphics: { controllers: [{ vendor: "Advanced Micro Devices, Inc." }] } },
  "win-cpu": { platform: "win32", arch: "x64", gpu: "none", graphics: { controllers: [] } },
  "mac-arm64": { platform: "darwin", arch: "arm64", gpu: "apple", graphics: { controllers: [{ vendor: "Apple" }] } },
  "mac-intel": { platform: "darwin", arch: "x64", gpu: "intel", graphics: { controllers: [{ vendor: "Intel" }] } },
  // newer Pinokio releases expose the driver directly as `gpu_driver`
  "linux-nvidia-gpu_driver-590": { platform: "linux", arch: "x64", gpu: "nvidia", graphics: { controllers: [] }, gpu_driver: "590.10" },
}
const EXPECTED_TORCH = {
  "linux-cpu": "cpu", "linux-nvidia-575": "cu128", "linux-nvidia-580": "cu130", "linux-nvidia-unknown-driver": "cu128",
  "linux-amd": "rocm7.2", "linux-intel-gpu": "cpu", "win-nvidia-560": "cu128", "win-nvidia-581": "cu130",
  "win-amd": "cpu", "win-cpu": "cpu", "mac-arm64": "pypi", "mac-intel": "none", "linux-nvidia-gpu_driver-590": "cu130",
}

function engine(machine) {
  const t = new Template()
  t.init({ kernel: { gpus: [] }, system: {}, vram: 8, ram: 16, which: () => "/usr/bin/x", ...machine })
  return t
}
function memory(local = {}) {
  return {
    input: { event: ["http://127.0.0.1:42003", "http://127.0.0.1:42003"] },
    args: { venv: "env", path: "." },
    local, global: {}, cwd: REPO, port: 42003, name: "qtinker",
    exists: (...p) => fs.existsSync(path.join(REPO, ...p)),
    running: () => false,
  }
}
// every string still holding {{ }} after rendering (an expression that threw, or quirk 4 of the notes)
function leftovers(value, at = "") {
  if (typeof value === "string") return /\{\{.*\}\}/.test(value) ? [`${at}: ${value}`] : []
  if (Array.isArray(value)) return value.flatMap((v, i) => leftovers(v, `${at}[${i}]`))
  if (value && typeof value === "object") return Object.entries(value).flatMap(([k, v]) => leftovers(v, `${at}.${k}`))
  return []
}

// Walk a script the way the kernel does: render a step, skip it when `when` is falsy, else "run"
// it (local.set updates local), stop after a step with next: null.
function walk(script, machine) {
  const t = engine(machine)
  const local = {}
  const ran = []
  for (const raw of script.run) {
    const step = t.render(raw, memory(local))
    if ("when" in raw && !step.when) continue
    ran.push(step)
    if (step.method === "local.set") Object.assign(local, step.params)
    if (raw.next === null) break
  }
  return ran
}

test("every step's method resolves with pinokiod's own resolver", async () => {
  const api = new Api({})
  for (const name of SCRIPTS) {
    for (const [i, step] of load(name).run.entries()) {
      assert.equal(typeof step.method, "string", `${name} step ${i}: method`)
      if (step.method.startsWith("kernel.api.")) {
        // kernel methods resolve against the running kernel: check the Api class has it
        const name = step.method.slice("kernel.api.".length)
        assert.equal(typeof Api.prototype[name], "function", `${name} step ${i}: ${step.method} is not a kernel.api method`)
        continue
      }
      let resolved
      try {
        resolved = await api.resolveMethod({ method: step.method })
      } catch (e) {
        assert.fail(`${name} step ${i}: ${step.method} does not resolve (${e.message}); an unknown method hangs Pinokio silently`)
      }
      assert.equal(typeof resolved.method, "function", `${name} step ${i}: ${step.method} is not a Pinokio method`)
    }
  }
})

test("every template renders on every machine: no leftover {{ }}, every `when` is a boolean", () => {
  for (const [machineName, machine] of Object.entries(MACHINES)) {
    const t = engine(machine)
    for (const name of SCRIPTS) {
      const local = { nvidia_driver: 0 }
      for (const [i, raw] of load(name).run.entries()) {
        const step = t.render(raw, memory(local))
        const where = `${name} step ${i} on ${machineName}`
        assert.deepEqual(leftovers(step), [], `${where}: unrendered template`)
        if ("when" in raw) assert.equal(typeof step.when, "boolean", `${where}: when -> ${JSON.stringify(step.when)}`)
      }
    }
  }
})

test("shell steps: existing cwd, the env venv, `on` regexes valid, nothing that trips Pinokio", () => {
  const t = new Template()
  for (const name of SCRIPTS) {
    for (const [i, step] of load(name).run.entries()) {
      const where = `${name} step ${i}`
      if (step.method === "script.start") {
        assert.ok(fs.existsSync(path.join(REPO, step.params.uri)), `${where}: ${step.params.uri} missing`)
      }
      if (step.method !== "shell.run") continue
      const p = step.params
      const dir = /\{\{/.test(p.path) ? "." : p.path
      assert.ok(fs.statSync(path.join(REPO, dir)).isDirectory(), `${where}: path ${p.path}`)
      if (p.venv) assert.ok(["env", "{{args && args.venv ? args.venv : 'env'}}"].includes(p.venv), `${where}: venv ${p.venv}`)
      for (const message of [].concat(p.message)) {
        // Pinokio aborts a step whose output matches /error:/i or /errno /i, and the shell echoes the command
        assert.doesNotMatch(message, /error:|errno /i, `${where}: the command itself would trip Pinokio's error handler`)
        // the PTY bash is interactive: `!` in double quotes is history expansion
        assert.doesNotMatch(message, /!/, `${where}: "!" in a shell command`)
      }
      for (const handler of p.on || []) {
        assert.match(handler.event, /^\/.+\/[dgimsuy]*$/, `${where}: on.event must be a /regex/ string`)
        t.regex(handler.event)
      }
    }
  }
})

test("start.js: daemon, {{port}}, and the URL regex picks Gradio's line", () => {
  const start = load("start.js")
  assert.equal(start.daemon, true)
  const [run, set] = start.run
  assert.equal(run.method, "shell.run")
  assert.equal(run.params.venv, "env")
  assert.equal(run.params.message, "python app/app.py")
  assert.equal(run.params.env.GRADIO_SERVER_PORT, "{{port}}")
  const re = new Template().regex(run.params.on[0].event)
  const line = "\r\n* Running on local URL:  http://127.0.0.1:42011\r\n* To create a public link, set `share=True`"
  const m = [...line.matchAll(re)][0]
  assert.equal(m[1], "http://127.0.0.1:42011")
  assert.equal(run.params.on[0].done, true)
  assert.deepEqual(set, { method: "local.set", params: { url: "{{input.event[1]}}" } })
})

test("torch.js installs exactly one torch build per machine, the version pinned in requirements.txt", () => {
  const torch = load("torch.js")
  // one branch per machine, each ending the script (else a later branch, e.g. the CPU build, runs too)
  for (const [i, step] of torch.run.entries()) {
    if ("when" in step) assert.equal(step.next, null, `torch.js step ${i} must end with next: null`)
  }
  for (const [machineName, machine] of Object.entries(MACHINES)) {
    const installs = walk(torch, machine).filter((s) => s.method === "shell.run").map((s) => s.params.message)
    const notes = walk(torch, machine).filter((s) => s.method === "notify")
    const expected = EXPECTED_TORCH[machineName]
    if (expected === "none") {
      assert.deepEqual(installs, [], `${machineName}: must not install torch`)
      assert.match(notes[0].params.html, /Intel Mac.*Apple silicon/s, `${machineName}: explains why`)
      continue
    }
    assert.equal(installs.length, 1, `${machineName}: ${JSON.stringify(installs)}`)
    const [cmd] = installs
    assert.ok(cmd.startsWith(`uv pip install torch==${TORCH_PIN}`), `${machineName}: ${cmd}`)
    if (expected === "pypi") assert.doesNotMatch(cmd, /--index-url/, machineName)
    else assert.ok(cmd.endsWith(` --index-url https://download.pytorch.org/whl/${expected}`), `${machineName}: ${cmd}`)
  }
})

test("install.js: Intel Macs get a message and nothing else; other machines get venv, torch, requirements, check", () => {
  const install = load("install.js")
  const mac = walk(install, MACHINES["mac-intel"])
  assert.deepEqual(mac.map((s) => s.method), ["log", "notify"])
  assert.match(mac[1].params.html, /Intel Mac/)
  for (const machineName of ["linux-cpu", "win-nvidia-581", "mac-arm64"]) {
    const steps = walk(install, MACHINES[machineName])
    assert.deepEqual(steps.map((s) => s.method),
      ["shell.run", "kernel.api.stop", "script.start", "shell.run", "shell.run", "shell.run", "notify"], machineName)
    const [venv, stop, torch, torchCheck, reqs, check] = steps
    assert.equal(venv.params.venv, "env")
    // a failed torch.js stays "running" and script.start would skip it: install.js stops it first
    assert.equal(stop.params.uri, path.join(REPO, "torch.js"))
    // ...and checks what it installed before anything else can pull torch from PyPI
    assert.ok(torchCheck.params.message.startsWith('python -c "import torch;'), torchCheck.params.message)
    assert.ok(torchCheck.params.message.includes(`assert v.split('+')[0] == '${TORCH_PIN}'`), "torch check matches requirements.txt")
    // numpy 2.4 / pandas 3 / transformers 5 need Python >= 3.11; Pinokio's own Python is 3.10
    assert.equal(venv.params.venv_python, "3.11")
    assert.deepEqual(torch.params, { uri: "torch.js", params: { venv: "env", path: "." } })
    // requirements.txt ends with `-e .`: it must run from the repo root
    assert.deepEqual([reqs.params.path, reqs.params.venv, reqs.params.message], [".", "env", "uv pip install -r requirements.txt"])
    assert.match(check.params.message, /^python -c "import torch, qtinker;/)
  }
  // Pinokio's Python bundle (conda, git, uv) exists in this pinokiod
  assert.equal(typeof Setup[install.requires.bundle], "function")
  assert.ok(Setup[install.requires.bundle]({ gpu: "none" }).conda_requirements.includes("uv"))
})

test("install.js and update.js run the one list of dependency steps in deps.js", () => {
  const deps = load("deps.js")
  const install = load("install.js").run
  const update = load("update.js").run
  assert.deepEqual(install.slice(3, 3 + deps.run.length), deps.run)
  assert.deepEqual(update[0], { method: "shell.run", params: { path: ".", message: "git pull" } })
  assert.deepEqual(update.slice(1), deps.run)
  assert.deepEqual(load("update.js").requires, deps.requires)
  assert.deepEqual(load("install.js").requires, deps.requires)
})

test("reset.js removes env/ and nothing else", () => {
  assert.deepEqual(load("reset.js").run, [{ method: "fs.rm", params: { path: "env" } }])
})

// a stand-in for Pinokio's `info` (paths relative to the repo root)
function fakeInfo({ files = [], running = [], local = {} } = {}) {
  return {
    exists: (p) => files.some((f) => f === p || f.startsWith(p + "/")),
    running: (p) => running.includes(p),
    local: (p) => local[p] || {},
    path: (p) => path.join(REPO, p),
  }
}
const INSTALLED = ["env/bin/python", "env/bin/qtinker", "bert_models/README.md"]
const STATES = {
  fresh: { files: ["bert_models/README.md"] },
  "failed install": { files: ["env/bin/python", "bert_models/README.md"] },
  installing: { files: ["env/bin/python"], running: ["install.js"] },
  updating: { files: INSTALLED, running: ["update.js"] },
  resetting: { files: INSTALLED, running: ["reset.js"] },
  "installed, idle": { files: INSTALLED },
  "installed, idle, with outputs": { files: [...INSTALLED, "outputs/run1/metrics.json"] },
  "installed, windows": { files: ["env/Scripts/python.exe", "env/Scripts/qtinker.exe", "bert_models/README.md"] },
  starting: { files: INSTALLED, running: ["start.js"] },
  running: { files: INSTALLED, running: ["start.js"], local: { "start.js": { url: "http://127.0.0.1:42003" } } },
}
const EXPECTED_MENU = {
  fresh: ["*Install"],
  "failed install": ["*Install", "Reset"],
  installing: ["*Installing…"],
  updating: ["*Updating…"],
  resetting: ["*Resetting…"],
  "installed, idle": ["*Start", "Models folder", "Update", "Install", "Reset"],
  "installed, idle, with outputs": ["*Start", "Models folder", "Outputs folder", "Update", "Install", "Reset"],
  "installed, windows": ["*Start", "Models folder", "Update", "Install", "Reset"],
  starting: ["*Starting…"],
  running: ["*Open Web UI", "Terminal", "Models folder"],
}

test("pinokio.js menu in every state: the right items, one default, hrefs that exist", async () => {
  const pinokio = load("pinokio.js")
  for (const [state, opts] of Object.entries(STATES)) {
    const menu = await pinokio.menu({}, fakeInfo(opts))
    assert.deepEqual(menu.map((m) => (m.default ? "*" : "") + m.text), EXPECTED_MENU[state], state)
    assert.equal(menu.filter((m) => m.default).length, 1, `${state}: one default item`)
    for (const item of menu) {
      if (/^https?:\/\//.test(item.href)) continue
      const target = path.join(REPO, item.href)
      if (item.fs) assert.ok(fakeInfo(opts).exists(item.href), `${state}: folder ${item.href} shown only when it exists`)
      else assert.ok(fs.statSync(target).isFile(), `${state}: ${item.href} is not a launcher file`)
    }
    const reset = menu.find((m) => m.href === "reset.js" && !m.default)
    if (reset) assert.match(reset.confirm, /bert_models.*outputs.*kept/s, `${state}: Reset asks first and says what stays`)
  }
  const running = await pinokio.menu({}, fakeInfo(STATES.running))
  assert.equal(running[0].href, "http://127.0.0.1:42003")
  assert.equal(running[1].href, "start.js")
})

test("pinokio.js passes this pinokiod's version gate; pinokio.json is valid", () => {
  const src = fs.readFileSync(require.resolve("pinokiod/kernel/index.js"), "utf8")
  const schema = src.match(/schema = "([^"]+)"/)[1]
  const pinokio = load("pinokio.js")
  assert.ok(semver.satisfies(semver.coerce(pinokio.version), schema), `${pinokio.version} vs ${schema}`)
  const meta = JSON.parse(fs.readFileSync(path.join(REPO, "pinokio.json"), "utf8"))
  assert.equal(meta.title, "QTinker")
  assert.ok(meta.description.length > 20)
  if (meta.icon) assert.ok(fs.existsSync(path.join(REPO, meta.icon)))
})

test(".gitignore keeps the venv, node_modules, logs and Pinokio's ENVIRONMENT out of git", () => {
  const lines = fs.readFileSync(path.join(REPO, ".gitignore"), "utf8").split(/\r?\n/).map((l) => l.trim())
  for (const entry of ["env/", "node_modules/", "logs/", "ENVIRONMENT", "cache/"]) {
    assert.ok(lines.includes(entry), `.gitignore lacks ${entry}`)
  }
})
