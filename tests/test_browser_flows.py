"""Browser checks of the flows a newcomer trusts (issues 13 and 11), in headless Chromium with tiny random BERTs:
Stop then Resume to the finish summary, the form of a running job restored on reopen, the compatibility
verdict following the student, the latency chart drawn from compiled numbers when compile is on, and the
recommended format named and offered first for download.
"""

from __future__ import annotations

import re
import time

import pytest

from test_browser import ARGS, CHROMIUM, pick, pytestmark  # noqa: F401  (pytestmark: browser, skip without chromium)
from test_ui_api import app, shared, write_csv  # noqa: F401  (app, shared: fixtures: one app per module)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for this module (the app is test_ui_api's `shared`: one per module, its own folders)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def context(app, browser):
    """A fresh browser context (`app`: the module's app, with this test process pointed at its folders)."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    yield ctx
    ctx.close()


def open_tab(context, url: str, tab: str):
    from playwright.sync_api import expect

    page = context.new_page()
    page.goto(url)
    expect(page.get_by_role("heading", name="QTinker")).to_be_visible(timeout=60_000)
    page.get_by_role("tab", name=tab).click()
    return page


def model(tiny_bert, name: str, **shape) -> str:
    """A tiny model imported into the app's models folder (once per module: the app is shared)."""
    from qtinker.core import paths
    from qtinker.models.registry import import_model

    if not (paths.models_dir() / name).exists():
        import_model(tiny_bert(name, **shape))
    return name


def wait_jobs_done(command: str, timeout: float) -> None:
    from qtinker import jobs

    deadline = time.time() + timeout
    while any(j.status in ("running", "queued") for j in jobs.list_jobs(command)):
        assert time.time() < deadline, [j.log_tail(20) for j in jobs.list_jobs(command)]
        time.sleep(0.5)


# ---------------------------------------------------------------- Distill


@pytest.mark.slow  # 30-100 s measured on a loaded 2-core machine (page load, the pickers)
def test_the_verdict_follows_a_student_with_another_vocabulary(app, context, tiny_bert):
    from playwright.sync_api import expect

    from qtinker.core import paths
    from qtinker.models.registry import import_model

    model(tiny_bert, "tiny-teacher", layers=4, num_labels=2)
    model(tiny_bert, "same-vocab", layers=2)
    if not (paths.models_dir() / "other-vocab").exists():
        other = tiny_bert("other-vocab", layers=2)
        (other / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n", encoding="utf-8")
        import_model(other)
    page = open_tab(context, app.url, "Distill")
    pick(page, "Teacher", "tiny-teacher")
    pick(page, "Student", "same-vocab")
    verdict = page.locator("#compatibility")
    expect(verdict).to_contain_text("Compatible: same vocabulary", timeout=15_000)
    pick(page, "Student", "other-vocab")  # a different vocabulary: the verdict follows within seconds
    expect(verdict).to_contain_text("Not compatible: vocabularies differ", timeout=10_000)
    expect(verdict).not_to_contain_text("Compatible: same vocabulary")
    pick(page, "Student", "same-vocab")
    expect(verdict).to_contain_text("Compatible: same vocabulary", timeout=10_000)


@pytest.mark.slow
def test_reopen_mid_run_restores_the_form_then_stop_resume_finishes_with_summary(app, context, tiny_bert, tmp_path):
    from playwright.sync_api import expect

    from qtinker import jobs

    model(tiny_bert, "tiny-teacher", layers=4, num_labels=2)  # a 2-class head: no fine-tuning first
    page = open_tab(context, app.url, "Distill")
    pick(page, "Teacher", "tiny-teacher")
    expect(page.locator("#compatibility")).to_contain_text("Compatible", timeout=15_000)
    page.locator("#distill_data_choice").get_by_label("Upload a file").check()
    page.locator("#distill_data input[type=file]").set_input_files(str(write_csv(tmp_path / "train.csv", n=240)))
    expect(page.locator("#data_summary")).to_contain_text("240 examples", timeout=15_000)
    page.locator("#method").get_by_label("feature").check()
    training = page.locator("#distill_training")
    training.get_by_label("epochs", exact=True).fill("2")  # 2 × 54 steps: long enough to stop, short to finish
    training.get_by_label("batch size").fill("4")
    training.get_by_label("learning rate").fill("0.001")
    training.get_by_label("max tokens").fill("32")
    training.get_by_label("Output name").fill("resumed-student")
    page.get_by_text("Advanced: loss balance").click()
    advanced = page.locator("#distill_advanced")
    advanced.get_by_label("balance losses").uncheck()
    advanced.get_by_label("joint", exact=True).check()
    # before Start: the time the run will take, measured here and said to be an estimate
    expect(page.locator("#distill_estimate")).to_contain_text("Estimated time on this CPU", timeout=60_000)
    expect(page.locator("#distill_estimate")).to_contain_text("An estimate")
    page.get_by_role("button", name="Start distillation").click()
    expect(page.locator("#distill_started")).to_contain_text("Started job", timeout=15_000)
    job = jobs.latest_job("distill")

    # ---- reopen mid-run: the form shows the running job's settings, and says so
    page.close()
    page = open_tab(context, app.url, "Distill")
    expect(page.locator("#distill_form_note")).to_contain_text(job.id, timeout=30_000)
    training = page.locator("#distill_training")
    expect(training.get_by_label("batch size")).to_have_value("4")
    expect(training.get_by_label("max tokens")).to_have_value("32")
    expect(training.get_by_label("Output name")).to_have_value("resumed-student")
    expect(page.locator("#method").get_by_label("feature")).to_be_checked()
    expect(page.get_by_label("Teacher", exact=True)).to_have_value("tiny-teacher")
    page.get_by_text("Advanced: loss balance").click()
    advanced = page.locator("#distill_advanced")
    expect(advanced.get_by_label("balance losses")).not_to_be_checked()
    expect(advanced.get_by_label("joint", exact=True)).to_be_checked()
    assert jobs.get_job(job.id).running

    # ---- Stop while the student trains, then Resume to the end
    expect(page.locator("#distill_progress")).to_contain_text("training student", timeout=120_000)
    page.get_by_role("button", name="Stop", exact=True).click()
    expect(page.locator("#distill_started")).to_contain_text("Resume continues", timeout=15_000)
    expect(page.locator("#distill_status")).to_contain_text("stopped", timeout=60_000)
    resume = page.locator("#distill_resume")
    expect(resume).to_be_visible(timeout=15_000)
    resume.click()
    expect(page.locator("#distill_started")).to_contain_text("Resumed as job", timeout=15_000)
    resumed = jobs.latest_job("distill")
    assert resumed.id != job.id and resumed.out == job.out
    expect(page.locator("#distill_status")).to_contain_text(resumed.id, timeout=30_000)
    expect(page.locator("#distill_status")).to_contain_text("done", timeout=300_000)
    # the finish summary: how much of the teacher's accuracy the student keeps
    expect(page.locator("#distill_status")).to_contain_text("Finished")
    expect(page.locator("#distill_status")).to_contain_text(re.compile(r"keeps [\d.]+% of the teacher's accuracy"))
    expect(resume).to_be_hidden()
    assert jobs.get_job(job.id).status == "stopped" and jobs.get_job(resumed.id).status == "done"


# ---------------------------------------------------------------- Quantize & Export


def quantize_in_page(page, name: str, schemes: list[str], compile_: bool) -> None:
    """Pick the model and schemes, no accuracy (the tiny model is random), cold start off; Quantize; wait."""
    from playwright.sync_api import expect

    pick(page, "Model to quantize", name)
    schemes_box = page.get_by_label("Schemes", exact=True)
    block = schemes_box.locator("xpath=ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' block ')][1]")
    block.get_by_title("Clear").click()  # the default selection
    for scheme in schemes:
        schemes_box.click()
        block.get_by_role("option", name=re.compile(f"^{re.escape(scheme)} —")).click()
    page.keyboard.press("Escape")
    page.get_by_label("No accuracy (size and speed only)").check()
    box = page.get_by_label("Also time under torch.compile")
    box.check() if compile_ else box.uncheck()
    page.get_by_label("Time cold start (fresh process to first prediction)").uncheck()
    page.get_by_role("button", name="Quantize", exact=True).click()
    expect(page.locator("#quantize_started")).to_contain_text(schemes[-1], timeout=15_000)


def bars(page) -> dict[str, float]:
    """The latency chart's bars as drawn: its SVG marks are labelled "model: int8-dynamic (after); ms: 65.258"."""
    chart = page.locator(".block").filter(has_text="Latency at batch 16 as measured")
    labels = chart.locator("svg [aria-roledescription='bar']").evaluate_all("els => els.map(e => e.getAttribute('aria-label'))")
    shown = {}
    for label in labels:
        fields = dict(part.split(": ", 1) for part in label.split("; "))
        shown[fields["model"]] = float(fields["ms"].replace(",", ""))
    return shown


@pytest.mark.slow
def test_the_latency_chart_plots_compiled_numbers_when_compile_is_on(app, context, tiny_bert):
    from playwright.sync_api import expect

    from qtinker.ui.quantize_tab import quantize_results

    model(tiny_bert, "tiny-compiled", layers=2, num_labels=2)
    page = open_tab(context, app.url, "Quantize & Export")
    quantize_in_page(page, "tiny-compiled", ["int8-dynamic"], compile_=True)
    wait_jobs_done("quantize", 600)
    expect(page.locator("#quantize_table")).to_contain_text("int8-dynamic (after)", timeout=30_000)
    rows = {r["model"]: r for r in quantize_results()}
    compiled = {name: r["compiled batch 16 (ms)"] for name, r in rows.items()}
    assert all(compiled.values()), rows  # both float and int8 were timed under compile
    deadline = time.time() + 30
    while set(bars(page)) != set(compiled) and time.time() < deadline:
        page.wait_for_timeout(500)
    drawn = bars(page)
    assert drawn.keys() == compiled.keys()
    for name, value in drawn.items():  # the compiled numbers (as rounded on the chart), not the eager ones
        assert value == pytest.approx(compiled[name], rel=0.02, abs=0.01), (name, drawn, rows)
        eager = rows[name]["latency batch 16 (ms)"]
        assert abs(value - compiled[name]) < abs(value - eager) or compiled[name] == pytest.approx(eager, rel=0.02)


@pytest.mark.slow
def test_the_recommended_format_is_named_and_offered_first_for_download(app, context, tiny_bert, tmp_path):
    from playwright.sync_api import expect

    model(tiny_bert, "tiny-ship", layers=2, num_labels=2)
    page = open_tab(context, app.url, "Quantize & Export")
    quantize_in_page(page, "tiny-ship", ["int8-dynamic", "onnx"], compile_=False)
    wait_jobs_done("quantize", 300)
    expect(page.locator("#quantize_table")).to_contain_text("onnx (after)", timeout=30_000)  # both formats measured
    recommended = page.locator("#quantize_recommended")
    # a tiny model runs far faster under onnxruntime than in eager PyTorch: a quantized format wins, not float
    expect(recommended).to_contain_text(re.compile(r"Recommended for this machine: (int8-dynamic|onnx)"), timeout=30_000)
    fmt = re.search(r"Recommended for this machine: (.+?) \(", recommended.inner_text()).group(1)
    scheme = fmt.removesuffix(" eager").removesuffix(" compiled")
    folder = f"tiny-ship-{scheme}"
    download_box = page.get_by_label("Model to download", exact=True)
    expect(download_box).to_have_value(folder, timeout=15_000)  # chosen for you...
    download_box.click()
    block = download_box.locator("xpath=ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' block ')][1]")
    expect(block.get_by_role("option").first).to_have_attribute("aria-label", folder)  # ...and first in the list
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Package as zip").click()
    expect(page.locator("#zipped")).to_contain_text(f"{folder}.zip", timeout=60_000)
    with page.expect_download() as download:
        page.locator("#download_zip").click()
    assert download.value.suggested_filename == f"{folder}.zip"
