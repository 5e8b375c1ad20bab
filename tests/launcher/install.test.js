// Opt-in (downloads ~1 GB of packages, minutes): install.js for real in Pinokio's kernel, from a
// fresh copy of the repo, then start.js on the venv it made.
//
//   QTINKER_LAUNCHER_FULL_INSTALL=1 node --test --test-force-exit tests/launcher/install.test.js
//
// Needs `uv` (requirements-dev.txt) and PyPI. Where download.pytorch.org is unreachable, set
// QTINKER_TEST_TORCH_FIND_LINKS to a folder holding the torch wheel (e.g. /opt/wheels).
"use strict"
const { test, before, after } = require("node:test")
const assert = require("node:assert/strict")
const fs = require("fs")
const { execFileSync } = require("child_process")
const { Harness, httpGet, portFree, sleep } = require("./harness.js")

const enabled = process.env.QTINKER_LAUNCHER_FULL_INSTALL === "1"
const texts = (menu) => menu.map((m) => (m.default ? "*" : "") + m.text)
let h

before(async () => {
  if (enabled) h = await new Harness().start()
})
after(async () => {
  if (h) await h.close()
})

test("install.js for real: Python 3.11 venv, torch 2.13.0, requirements, qtinker installed", { skip: !enabled && "set QTINKER_LAUNCHER_FULL_INSTALL=1 (downloads packages)" }, async () => {
  assert.ok(h.paths.uv, "uv is needed (pip install -r requirements-dev.txt)")
  const t0 = Date.now()
  const r = await h.run("install.js", { timeoutMs: 25 * 60 * 1000 })
  const seconds = Math.round((Date.now() - t0) / 1000)
  process.stderr.write(`install.js: ${r.outcome} in ${seconds} s\n${r.text.split("\n").filter((l) => /QTinker .* is installed|Installed \d+ packages|Python 3/.test(l)).join("\n")}\n`)
  assert.equal(r.outcome, "done", r.text.slice(-4000))
  const python = h.script("env/bin/python")
  const out = execFileSync(python, ["-c", "import sys, torch, torchao, qtinker; print(sys.version_info[:2], torch.__version__, torchao.__version__, qtinker.__file__)"]).toString()
  assert.match(out, /\(3, 11\) 2\.13\.0/)
  assert.match(out, /0\.18\.0/)
  assert.ok(out.includes(h.dir), `qtinker is the editable checkout: ${out}`)
  assert.match(r.text, /QTinker \S+ is installed: torch 2\.13\.0/)
  assert.ok(fs.existsSync(h.script("env/bin/qtinker")))
  assert.ok(await h.idle("install.js"))
  assert.equal(texts(await h.menu())[0], "*Start")
})

test("start.js on the installed venv: URL, HTTP 200, stop frees the port", { skip: !enabled && "set QTINKER_LAUNCHER_FULL_INSTALL=1" }, async () => {
  const r = await h.run("start.js", { timeoutMs: 90000 })
  assert.equal(r.outcome, "started", r.text.slice(-3000))
  const url = h.local("start.js").url
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/)
  assert.equal(await httpGet(url), 200)
  assert.equal((await h.menu())[0].href, url)
  await h.stopScript("start.js")
  const port = Number(url.split(":").pop())
  let free = false
  for (let i = 0; i < 100 && !free; i++) {
    free = await portFree(port)
    if (!free) await sleep(100)
  }
  assert.ok(free)
})
