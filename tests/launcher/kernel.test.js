// The launcher run by Pinokio's real kernel (npm pinokiod 5.3.28), headless, in a temp
// PINOKIO_HOME (see harness.js): the menu fresh / installed / running, torch.js's branch on each
// kind of machine (shell.run stubbed: nothing is installed), install.js and update.js walked end to
// end (stubbed), start.js for real (URL captured, HTTP 200, URL in the menu, port freed after
// stop) and reset.js for real (env/ gone, bert_models/ and outputs/ untouched).
"use strict"
const { test, before, after } = require("node:test")
const assert = require("node:assert/strict")
const fs = require("fs")
const path = require("path")
const { execFileSync } = require("child_process")
const { Harness, httpGet, portFree, sleep } = require("./harness.js")

let h
// While set, shell.run steps are recorded in stub.calls instead of run; stub.real(params) lets a
// step run for real, stub.fail(params) makes it fail the way a failing command does.
let stub = null
const newStub = (opts = {}) => ({ calls: [], real: () => false, fail: () => false, ...opts })

before(async () => {
  h = await new Harness().start()
  const api = h.kernel.api
  const resolve = api.resolveMethod.bind(api)
  api.resolveMethod = async (rpc, cwd) => {
    const real = await resolve(rpc, cwd)
    if (stub && rpc.method === "shell.run" && !stub.real(rpc.params)) {
      const current = stub
      return {
        ...real,
        method: async (req, ondata) => {
          current.calls.push({ script: path.basename(req.parent.path), params: req.params, dir: path.resolve(req.cwd, req.params.path || ".") })
          const message = [].concat(req.params.message).join(" && ")
          if (current.fail(req.params)) {
            const response = `(stub) ${message}\r\nerror: simulated failure\r\n`
            ondata({ raw: response })
            return { response, stdout: response, event: null, error: ["error:"] }
          }
          ondata({ raw: `(stub) ${message}\r\n` })
          return { stdout: "", event: null }
        },
      }
    }
    return real
  }
})

after(async () => {
  if (h) await h.close()
})

const texts = (menu) => menu.map((m) => (m.default ? "*" : "") + m.text)
const TORCH_PIN = fs.readFileSync(path.join(__dirname, "..", "..", "requirements.txt"), "utf8").match(/^torch==(\S+)/m)[1]

// Pretend to be another machine for the template engine only (shell.run is stubbed meanwhile).
// Every step re-reads the GPU fields from kernel.sys.info (update_sysinfo); platform and arch
// are template values set once at init.
async function asMachine(machine, fn) {
  const { platform, arch, ...sys } = machine
  const info = h.kernel.sys.info
  const vals = h.kernel.template.vals
  const savedInfo = Object.fromEntries(Object.keys(sys).map((k) => [k, info[k]]))
  const savedVals = { platform: vals.platform, arch: vals.arch }
  Object.assign(info, sys)
  h.kernel.template.update({ platform, arch })
  await h.kernel.update_sysinfo()
  stub = stub || newStub()
  try {
    return await fn()
  } finally {
    Object.assign(info, savedInfo)
    h.kernel.template.update(savedVals)
    await h.kernel.update_sysinfo()
    stub = null
  }
}

test("menu on a fresh checkout: Install only", async () => {
  assert.ok(!fs.existsSync(h.script("env")))
  assert.deepEqual(texts(await h.menu()), ["*Install"])
})

test("torch.js in the kernel: one torch build per machine", async () => {
  const nvidia = (v) => ({ controllers: [{ vendor: "NVIDIA", model: "nvidia geforce rtx 4090", driverVersion: v }] })
  const machines = [
    [{ platform: "linux", arch: "x64", gpu: "none", graphics: { controllers: [] } }, "cpu"],
    [{ platform: "linux", arch: "x64", gpu: "nvidia", graphics: nvidia("570.172.08") }, "cu128"],
    [{ platform: "linux", arch: "x64", gpu: "nvidia", graphics: nvidia("580.95.05") }, "cu130"],
    [{ platform: "win32", arch: "x64", gpu: "nvidia", graphics: nvidia("581.29") }, "cu130"],
    [{ platform: "linux", arch: "x64", gpu: "amd", graphics: { controllers: [] } }, "rocm7.2"],
    [{ platform: "win32", arch: "x64", gpu: "amd", graphics: { controllers: [] } }, "cpu"],
    [{ platform: "darwin", arch: "arm64", gpu: "apple", graphics: { controllers: [] } }, "pypi"],
  ]
  for (const [machine, expected] of machines) {
    const label = `${machine.platform}/${machine.arch}/${machine.gpu}`
    await asMachine(machine, async () => {
      const r = await h.run("torch.js", { timeoutMs: 15000 })
      assert.equal(r.outcome, "done", `${label}: ${r.outcome}\n${r.text}`)
      assert.equal(stub.calls.length, 1, `${label}: ${JSON.stringify(stub.calls)}`)
      const { params } = stub.calls[0]
      assert.equal(params.venv, "env")
      const index = expected === "pypi" ? "" : ` --index-url https://download.pytorch.org/whl/${expected}`
      assert.equal(params.message, `uv pip install torch==${TORCH_PIN}${index}`, label)
    })
  }
  await asMachine({ platform: "darwin", arch: "x64", gpu: "intel" }, async () => {
    const r = await h.run("torch.js", { timeoutMs: 15000 })
    assert.equal(r.outcome, "done")
    assert.deepEqual(stub.calls, [], "Intel Mac: nothing installed")
    const note = r.packets.find((p) => p.type === "notify")
    assert.match(note.data.html, /Intel Mac/)
  })
})

test("install.js in the kernel: venv (Python 3.11), torch.js, requirements, import check", async () => {
  await asMachine({ platform: "linux", arch: "x64", gpu: "nvidia", graphics: { controllers: [{ vendor: "NVIDIA", driverVersion: "580.65.06" }] } }, async () => {
    const r = await h.run("install.js", { timeoutMs: 30000 })
    assert.equal(r.outcome, "done", r.text)
    const calls = stub.calls
    assert.deepEqual(calls.map((s) => [s.script, s.params.message.split(" ").slice(0, 4).join(" ")]), [
      ["install.js", "python --version"],
      ["torch.js", `uv pip install torch==${TORCH_PIN}`],
      ["install.js", "python -c \"import torch;"],
      ["install.js", "uv pip install -r"],
      ["install.js", "python -c \"import torch,"],
    ])
    assert.equal(calls[0].params.venv_python, "3.11")
    assert.match(calls[1].params.message, /whl\/cu130$/)
    for (const s of calls) {
      assert.equal(s.params.venv, "env")
      assert.equal(s.dir, h.dir, "every step runs from the repo root")
    }
  })
  assert.ok(await h.idle("install.js"))
  await asMachine({ platform: "darwin", arch: "x64", gpu: "intel" }, async () => {
    const r = await h.run("install.js", { timeoutMs: 15000 })
    assert.equal(r.outcome, "done")
    assert.deepEqual(stub.calls, [], "Intel Mac: nothing runs")
    assert.match(r.packets.find((p) => p.type === "notify").data.html, /cannot run on an Intel Mac/)
    assert.match(r.text, /Apple silicon/)
  })
})

test("update.js in the kernel: git pull, then the same dependency steps", async () => {
  await asMachine({ platform: "linux", arch: "x64", gpu: "none", graphics: { controllers: [] } }, async () => {
    const r = await h.run("update.js", { timeoutMs: 30000 })
    assert.equal(r.outcome, "done", r.text)
    assert.deepEqual(stub.calls.map((s) => [s.script, s.params.message.split(" ").slice(0, 4).join(" ")]), [
      ["update.js", "git pull"],
      ["torch.js", `uv pip install torch==${TORCH_PIN}`],
      ["update.js", "python -c \"import torch;"],
      ["update.js", "uv pip install -r"],
      ["update.js", "python -c \"import torch,"],
    ])
  })
})

test("a failed torch.js stops the install before PyPI's torch can sneak in; Install again reruns torch.js", async () => {
  // a venv without torch, as after a failed torch download
  execFileSync(h.paths.python, ["-m", "venv", "--without-pip", h.script("env")])
  const cpu = { platform: "linux", arch: "x64", gpu: "none", graphics: { controllers: [] } }
  stub = newStub({
    fail: (p) => /^uv pip install torch/.test(p.message),
    real: (p) => /^python -c "import torch;/.test(p.message), // the torch check runs for real
  })
  try {
    await failThenRetry(cpu)
  } finally {
    fs.rmSync(h.script("env"), { recursive: true, force: true })
  }
})

async function failThenRetry(cpu) {
  await asMachine(cpu, async () => {
    const r = await h.run("install.js", { timeoutMs: 30000 })
    assert.equal(r.outcome, "error", r.text)
    assert.match(r.error.data, /No module named 'torch'/)
    assert.ok(!stub.calls.some((c) => /requirements/.test(c.params.message)), "requirements.txt must not run")
  })
  stub = null
  // Pinokio leaves a failed child script "running"; the user stops the failed install
  assert.ok(h.running("torch.js"), "kernel behaviour changed: a failed child script no longer stays running")
  await h.stopScript("install.js")
  await asMachine(cpu, async () => {
    const r = await h.run("install.js", { timeoutMs: 30000 })
    assert.equal(r.outcome, "done", r.text)
    assert.ok(stub.calls.some((c) => c.script === "torch.js"), "torch.js ran again")
  })
}

test("start.js for real: URL captured, HTTP 200, URL in the menu, port freed after stop", async () => {
  // installed: env/ is the venv that runs these tests (it has QTinker's dependencies and `qtinker`)
  fs.symlinkSync(h.paths.venv, h.script("env"))
  assert.deepEqual(texts(await h.menu()), ["*Start", "Models folder", "Update", "Install", "Reset"])

  const r = await h.run("start.js", { timeoutMs: 45000 })
  assert.equal(r.outcome, "started", `start.js did not start:\n${r.text.slice(-3000)}`)
  const url = h.local("start.js").url
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/, r.text.slice(-2000))
  const port = Number(url.split(":").pop())
  assert.ok(port >= 42000, `Pinokio's {{port}} (${port})`)
  assert.equal(await httpGet(url), 200)
  assert.ok(h.running("start.js"))

  // (the app creates outputs/ on start, so the Outputs folder item may appear too)
  const menu = await h.menu()
  assert.deepEqual(texts(menu).slice(0, 3), ["*Open Web UI", "Terminal", "Models folder"])
  assert.equal(menu[0].href, url)
  assert.equal(menu[1].href, "start.js")

  await h.stopScript("start.js")
  let free = false
  for (let i = 0; i < 100 && !free; i++) {
    free = await portFree(port)
    if (!free) await sleep(100)
  }
  assert.ok(free, `port ${port} still answers after stop`)
  assert.ok(!h.running("start.js"))
  assert.deepEqual(h.local("start.js"), {})
  assert.deepEqual(texts(await h.menu()).filter((t) => t !== "Outputs folder"), ["*Start", "Models folder", "Update", "Install", "Reset"])
})

test("reset.js for real: env/ gone, bert_models/ and outputs/ untouched", async () => {
  // a real folder this time (never let a test delete through a link to a real venv)
  fs.unlinkSync(h.script("env"))
  fs.mkdirSync(h.script("env/bin"), { recursive: true })
  fs.writeFileSync(h.script("env/bin/qtinker"), "")
  const model = h.script("bert_models/my-bert/config.json")
  const result = h.script("outputs/distilled-1/metrics.json")
  for (const f of [model, result]) {
    fs.mkdirSync(path.dirname(f), { recursive: true })
    fs.writeFileSync(f, "{\"kept\": true}")
  }
  assert.deepEqual(texts(await h.menu()), ["*Start", "Models folder", "Outputs folder", "Update", "Install", "Reset"])

  const r = await h.run("reset.js", { timeoutMs: 15000 })
  assert.equal(r.outcome, "done", r.text)
  assert.ok(!fs.existsSync(h.script("env")), "env/ removed")
  assert.equal(fs.readFileSync(model, "utf8"), "{\"kept\": true}")
  assert.equal(fs.readFileSync(result, "utf8"), "{\"kept\": true}")
  assert.ok(fs.existsSync(h.script("bert_models/README.md")))
  assert.ok(await h.idle("reset.js"))
  assert.deepEqual(texts(await h.menu()), ["*Install"])
})
