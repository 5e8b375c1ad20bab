"""The whole browser workflow in headless Chromium: Models → Distill → Quantize & Export → Download.

Imports a tiny teacher (a zip, as a user would), distills it on a slice of the bundled data, closes
the page mid-training (the job keeps running) and reopens it (the live view re-attaches), quantizes,
downloads the zip and loads the model from it. A screenshot of every tab goes to
test-artifacts/screenshots/. QTINKER_UPDATE_SCREENSHOTS=1 makes the README's set in docs/screenshots/:
the same walk with the real all-MiniLM-L6-v2 as the teacher (imported from its folder; minutes on CPU).
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from local_servers import FileServer
from test_ui_api import REPO, App

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SHOTS = REPO / "test-artifacts" / "screenshots"
DOCS = REPO / "docs" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                       reason="Debian chromium is not installed (apt-get install chromium); required in CI"),
]


def bundled_slice(path: Path, n: int, seed: int, source: Path) -> Path:
    """n rows of a bundled dataset (a stratified random slice keeps every class): a fast but real task."""
    with source.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rng = random.Random(seed)
    rng.shuffle(rows)
    labels = sorted({r["label"] for r in rows})
    picked = [r for label in labels for r in [r for r in rows if r["label"] == label][: n // len(labels)]]
    rng.shuffle(picked)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows({"text": r["text"], "label": r["label"]} for r in picked)
    return path


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for _ in range(40):  # no component still showing its "processing" spinner
        page.wait_for_timeout(250)
        if not page.get_by_text("processing |").count():
            break
    page.wait_for_timeout(800)  # let plots and tables finish drawing
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def pick(page, label: str, option: str, scope=None) -> None:
    """Choose an option of a Gradio dropdown."""
    box = (scope or page).get_by_label(label, exact=True)
    box.click()
    # the option list renders inside the dropdown's own block; another dropdown's list may still be closing
    block = box.locator("xpath=ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' block ')][1]")
    block.get_by_role("option", name=option, exact=True).click()
    page.keyboard.press("Escape")


TINY_GCS = "/bert_models/2020_02_20/uncased_L-2_H-128_A-2.zip"  # bert-tiny's path in the catalog
TINY_ZIP = (REPO / "tests" / "fixtures" / "tiny_bert_flat.zip").read_bytes()  # a real TF1 checkpoint, tiny


def test_browser_walkthrough(tiny_bert, tmp_path, monkeypatch, request):
    from playwright.sync_api import expect, sync_playwright

    import qtinker
    from qtinker import jobs
    from qtinker.data import sample_dataset_path, sample_eval_path

    docs = bool(os.environ.get("QTINKER_UPDATE_SCREENSHOTS"))
    if docs:  # a real teacher (fine-tuned on the data first), imported from its folder
        teacher_name, teacher_dir, teacher_zip = "all-minilm-l6-v2", request.getfixturevalue("minilm_dir"), None
    else:  # a tiny teacher with a 6-class head (as the data), uploaded as a zip
        teacher_name, teacher_dir = "tiny-teacher", tiny_bert("tiny-teacher", layers=4, hidden=32, heads=2, num_labels=6)
        teacher_zip = shutil.make_archive(str(tmp_path / "tiny-teacher"), "zip", teacher_dir.parent, teacher_dir.name)
    train = bundled_slice(tmp_path / "verses.csv", 240 if docs else 96, 0, sample_dataset_path())
    test = bundled_slice(tmp_path / "verses-test.csv", 120 if docs else 48, 0, sample_eval_path())
    mirror = FileServer({TINY_GCS: TINY_ZIP}).__enter__()  # Google Cloud Storage, served locally
    monkeypatch.setenv("QTINKER_GCS_BASE_URL", mirror.url)
    app = App(tmp_path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            page = context.new_page()
            page.goto(app.url)
            expect(page.get_by_role("heading", name="QTinker")).to_be_visible(timeout=60_000)

            # ---- Models: download a student from the catalog (Cloud Storage), import the teacher from a zip
            expect(page.locator("#local_models")).to_be_visible()
            pick(page, "Models to download", "bert-tiny")
            page.get_by_label("Google Cloud Storage (original Google release)").check()
            page.get_by_role("button", name="Download", exact=True).click()
            expect(page.locator("#download_started")).to_contain_text("bert-tiny: started", timeout=15_000)
            expect(page.locator("#downloads")).to_contain_text("done", timeout=120_000)
            expect(page.locator("#local_models")).to_contain_text("bert-tiny", timeout=15_000)
            page.get_by_text("Import a local folder or zip").click()
            if teacher_zip:
                page.locator("#import_zip input[type=file]").set_input_files(teacher_zip)
            else:
                page.get_by_label("…or a model folder on this computer").fill(str(teacher_dir))
                page.get_by_label("Name (optional)").fill(teacher_name)
            page.get_by_role("button", name="Import", exact=True).click()
            expect(page.locator("#import_result")).to_contain_text("Imported into", timeout=60_000)
            expect(page.locator("#local_models")).to_contain_text(teacher_name)
            shot(page, "1-models")

            # ---- Distill: teacher, student, data, method; start; watch
            page.get_by_role("tab", name="Distill").click()
            pick(page, "Teacher", teacher_name)
            pick(page, "Student", "bert-tiny")  # the downloaded model (the test's tiny one, with the tiny vocabulary)
            verdict = "Not compatible: vocabularies differ" if docs else "Compatible: same vocabulary"
            expect(page.locator("#compatibility")).to_contain_text(verdict, timeout=15_000)
            # ...but the test's bert-tiny reads only 64 positions and quantize times 128-token batches: build the
            # student from 2 of the teacher's layers instead
            pick(page, "Student", "from the teacher: N layers")
            page.get_by_label("Student layers (from the teacher)").fill("2")
            expect(page.locator("#compatibility")).to_contain_text("layers → student 2", timeout=15_000)
            expect(page.locator("#device")).to_contain_text("CPU", timeout=30_000)
            page.locator("#distill_data_choice").get_by_label("Upload a file").check()
            # a file without a label column: the preview says why, and Start refuses it leaving nothing behind
            bad = tmp_path / "no-label.csv"
            bad.write_text("id,text,source\n1,in the beginning,kjv\n2,and god said,kjv\n", encoding="utf-8")
            page.locator("#distill_data input[type=file]").set_input_files(str(bad))
            expect(page.locator("#data_summary")).to_contain_text("no-label.csv: no label column found", timeout=15_000)
            page.get_by_role("button", name="Start distillation").click()
            expect(page.locator("#distill_started")).to_contain_text("Pick the label column in Label column", timeout=15_000)
            outputs = Path(os.environ["QTINKER_OUTPUTS_DIR"])
            assert not (outputs / "data").exists() and not list(outputs.glob("*.partial")) and jobs.latest_job("distill") is None
            page.locator("#distill_data").get_by_label("Clear").click()  # the file box empties: upload the good one
            page.locator("#distill_data input[type=file]").set_input_files(str(train))
            expect(page.locator("#data_summary")).to_contain_text(f"{240 if docs else 96} examples", timeout=15_000)
            expect(page.locator("#data_summary")).to_contain_text("classification")
            # no evaluation file: the page says where the scores will come from
            expect(page.locator("#eval_summary")).to_contain_text("holding out 10% of the training file for evaluation")
            page.locator("#method").get_by_label("patient").check()
            training = page.locator("#distill_training")
            expect(training.get_by_label("Teacher fine-tune epochs")).to_have_value("3")
            training.get_by_label("epochs", exact=True).fill("2" if docs else "3")
            training.get_by_label("batch size").fill("8")
            training.get_by_label("learning rate").fill("0.001")
            training.get_by_label("max tokens").fill("64")  # verses are short
            training.get_by_label("Output name").fill("verse-student")
            page.get_by_role("button", name="Start distillation").click()
            expect(page.locator("#distill_started")).to_contain_text("Started job", timeout=15_000)
            expect(page.locator("#distill_status")).to_contain_text("running", timeout=30_000)

            # ---- close the page mid-training: the job keeps running; a new page re-attaches
            page.close()
            job = jobs.latest_job("distill")
            assert job.running, job.log_tail()
            time.sleep(2)
            assert jobs.get_job(job.id).running
            page = context.new_page()
            page.goto(app.url)
            page.get_by_role("tab", name="Distill").click()
            expect(page.locator("#distill_status")).to_contain_text(job.id, timeout=30_000)
            expect(page.locator("#distill_status")).to_contain_text("done", timeout=900_000 if docs else 240_000)
            expect(page.locator("#distill_status")).to_contain_text("of the teacher's accuracy")  # the finish summary
            expect(page.locator("#distill_evals")).to_contain_text("accuracy")
            pick(page, "Teacher", teacher_name)
            page.locator("#method").get_by_label("patient").check()
            shot(page, "2-distill")
            assert jobs.get_job(job.id).status == "done"

            # ---- Quantize & Export: quantize the student, compare, download the zip
            page.get_by_role("tab", name="Quantize & Export").click()
            pick(page, "Model to quantize", "verse-student")
            page.locator("#quantize_eval_choice").get_by_label("Upload a file").check()
            page.locator("#quantize_eval input[type=file]").set_input_files(str(test))
            if not docs:  # compiling costs ~30 s per shape on 2 cores; the screenshots keep it on (the default)
                page.get_by_label("Also time under torch.compile").uncheck()
            page.get_by_role("button", name="Quantize", exact=True).click()
            expect(page.locator("#quantize_started")).to_contain_text("int8-dynamic", timeout=15_000)
            expect(page.locator("#quantize_status")).to_contain_text("done", timeout=600_000 if docs else 240_000)
            expect(page.locator("#quantize_table")).to_contain_text("int8-dynamic (after)", timeout=15_000)
            pick(page, "Model to download", "verse-student-int8-dynamic")
            page.get_by_role("button", name="Package as zip").click()
            expect(page.locator("#zipped")).to_contain_text("verse-student-int8-dynamic.zip", timeout=30_000)
            with page.expect_download() as download:
                page.locator("#download_zip").click()
            zip_path = tmp_path / download.value.suggested_filename
            download.value.save_as(zip_path)
            shot(page, "3-quantize-export")

            # ---- Jobs: everything that ran, with its log
            page.get_by_role("tab", name="Jobs").click()
            expect(page.locator("#jobs_table")).to_contain_text("quantize", timeout=15_000)
            shot(page, "4-jobs")
            browser.close()
    finally:
        app.close()
        mirror.__exit__(None, None, None)

    # the downloaded zip holds a model that loads and classifies
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        assert "verse-student-int8-dynamic/README.md" in names
        zf.extractall(tmp_path / "unzipped")
    model, tokenizer = qtinker.load(tmp_path / "unzipped" / "verse-student-int8-dynamic")
    logits = model(**tokenizer(["In the beginning God created the heaven and the earth."], return_tensors="pt")).logits
    assert logits.shape[-1] == len({r["label"] for r in csv.DictReader(train.open(encoding="utf-8"))})
    if docs:
        DOCS.mkdir(parents=True, exist_ok=True)
        for png in sorted(SHOTS.glob("*.png")):
            shutil.copyfile(png, DOCS / png.name)
