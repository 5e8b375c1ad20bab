"""Distill tab: pick teacher, student, data and method; start a background run and watch it live."""

from __future__ import annotations

import math
import re
from pathlib import Path

import gradio as gr

from qtinker import jobs
from qtinker.core import paths
from qtinker.core.errors import QTinkerError
from qtinker.core.fsutil import safe_name
from qtinker.ui import common, live, time_estimate
from qtinker.ui.distill_form import FORM_FIELDS, restore_form  # noqa: F401  (FORM_FIELDS: the form's order)
from qtinker.ui.compatibility import CUSTOM, FROM_TEACHER, model_card, student_choices, verdict
from qtinker.ui.data_choice import AUTO, SAMPLE, UPLOAD, column_choices, data_preview, eval_preview, page_message, read_data

# DistillConfig fields shown per method (temperature and alpha weigh the soft-target loss every method uses)
METHOD_FIELDS = {"logit": ("temperature", "alpha"), "patient": ("beta", "layer_map"),
                 "feature": ("hidden_weight", "attention_weight", "embedding_weight", "layer_map")}
COMMON_FIELDS = ("method", "temperature", "alpha", "beta", "layer_map", "hidden_weight", "attention_weight",
                 "embedding_weight", "epochs", "batch_size", "lr", "max_length", "teacher_epochs", "student_from_teacher",
                 "student_config", "balance_losses", "balance_batches", "schedule", "intermediate_epochs", "augment")


def start(teacher, student, n_layers, custom, choice, upload, method, temperature, alpha, beta, layer_map,
          hidden_weight, attention_weight, embedding_weight, epochs, batch_size, lr, max_length, out_name, gpus=1,
          teacher_epochs=3, eval_upload=None, text_column="", label_column="", balance_losses=True, balance_batches=10,
          schedule="auto", intermediate_epochs=0, augment=0.0, unlabeled_upload=None) -> str:
    """Start the distillation as a background job (refused while another job holds the device); with
    gpus > 1, as one torchrun job with a process per GPU (see docs/scaling.md)."""
    from qtinker.data.loaders import load_unlabelled, sample_dataset_path, sample_eval_path

    check = verdict(teacher, student, n_layers, custom, method, teacher_epochs)
    if not check.startswith("**Compatible**"):
        return check
    t = common.find_model(teacher)
    try:  # one folder under outputs/: '.', '..', 'C:x', 'NUL' and separators are refused
        name = safe_name((out_name or "").strip() or f"{Path(t.name).name}-{method}-student", "Output name")
    except QTinkerError as exc:
        return f"**Error:** {exc}"
    try:  # the checks of the preview, again: bad data never starts a job (nor leaves a copy or a folder)
        read_data(choice, upload, eval_upload, text_column, label_column)
    except QTinkerError as exc:
        return f"**Error:** {page_message(exc, upload, eval_upload)}"
    data = str(sample_dataset_path()) if choice == SAMPLE else upload
    if unlabeled_upload:  # read as the run reads it: a bad file never starts a job
        if Path(data).suffix.lower() == ".txt":
            return ("**Error:** unlabeled text: the training file is already unlabelled text; upload labelled training "
                    "data to add unlabelled text to it.")
        try:
            load_unlabelled(common.check_upload(unlabeled_upload, common.DATA_UPLOAD_MAX, "data file"))
        except QTinkerError as exc:
            return f"**Error:** {page_message(exc, unlabeled_upload)}"
    data = data if choice == SAMPLE else str(common.keep_upload(upload))
    out = common.unique_folder(paths.outputs_dir() / name)
    args = ["--teacher", str(t.path), "--method", method, "--out", str(out), "--epochs", int(epochs),
            "--batch-size", int(batch_size), "--lr", float(lr), "--max-length", int(max_length),
            "--temperature", float(temperature), "--alpha", float(alpha), "--beta", float(beta), "--layer-map", layer_map,
            "--hidden-weight", float(hidden_weight), "--attention-weight", float(attention_weight),
            "--embedding-weight", float(embedding_weight), "--teacher-epochs", int(teacher_epochs),
            "--balance-batches", int(balance_batches), "--schedule", schedule,
            "--intermediate-epochs", int(intermediate_epochs or 0), "--augment", float(augment or 0)]
    args += ["--unlabeled", data] if Path(data).suffix.lower() == ".txt" else ["--data", data]
    if unlabeled_upload:
        args += ["--unlabeled", str(common.keep_upload(unlabeled_upload))]
    if choice == SAMPLE:
        args += ["--eval-data", str(sample_eval_path())]
    elif eval_upload:
        args += ["--eval-data", str(common.keep_upload(eval_upload))]
    args += ["--text-column", text_column] if text_column else []
    args += ["--label-column", label_column] if label_column else []
    if student == FROM_TEACHER:
        args += ["--student-from-teacher", int(n_layers)]
    elif student == CUSTOM:
        args += ["--student-config", ",".join(re.findall(r"\d+", custom))]
    else:
        args += ["--student", str(common.find_model(student).path)]
    if not balance_losses:  # a switch without a value: last, as --resume is
        args += ["--no-balance-losses"]
    device = common.device_slot()
    who = student if student not in (FROM_TEACHER, CUSTOM) else "student"
    gpus, program = int(gpus or 1), None
    if gpus > 1:  # one torchrun job: a process per GPU, --batch-size per process
        from qtinker.distill.distributed import launch_command, visible_gpus

        if gpus > len(visible_gpus()):
            return f"**Error:** GPUs to use: {gpus}, but {len(visible_gpus())} visible; choose 1-{len(visible_gpus())}."
        program, device = launch_command([], nproc=gpus), f"{device} ×{gpus}"
    try:
        job = jobs.start_job("distill", args, slot=common.device_slot(), title=f"distill {t.name} → {who} ({method})",
                             out=out, program=program)
    except QTinkerError as exc:
        return f"**Error:** {exc}"
    return f"Started job `{job.id}` on {device}: it keeps running if you close this tab. Output: `{out}`"


def plan(teacher, choice, upload, eval_upload, text_column, label_column, epochs, teacher_epochs, batch_size) -> str:
    """Before Start, the run's size in steps: the teacher's fine-tuning first (when it has no task head), then
    the student's training (the same split the run makes: the holdout share is not trained on)."""
    from qtinker.distill.config import DistillConfig

    t = common.find_model(teacher)
    try:
        train, held = read_data(choice, upload, eval_upload, text_column, label_column)
    except QTinkerError:
        return ""  # the data's own message is shown above
    if t is None or isinstance(train, list) or not batch_size or int(batch_size) < 1:
        return ""
    steps = lambda n, e: f"{int(e)} epoch{'s' * (int(e) != 1)} × {math.ceil(n / int(batch_size))} steps"  # noqa: E731
    split = len(train) - round(len(train) * DistillConfig().holdout)
    student = steps(len(train) if held is not None else split, epochs or 0)
    if t.num_labels is None and int(teacher_epochs or 0) > 0:
        return (f"Plan: **the teacher is fine-tuned first: {steps(split, teacher_epochs)}** of {int(batch_size)} "
                f"examples (a teacher step costs several student steps), then the student trains {student}.")
    return f"Plan: the student trains {student} of {int(batch_size)} examples."


def gpu_choice():
    """"GPUs to use" is shown only when more than one GPU is visible (all of them by default)."""
    from qtinker.distill.distributed import visible_gpus

    n = len(visible_gpus())
    return gr.update(visible=n > 1, maximum=max(n, 2), value=max(n, 1))


def stop_latest() -> str:
    job = jobs.latest_job("distill")
    if job is None or not job.running:
        return "No distillation is running."
    jobs.stop_job(job.id)
    return f"Stopping `{job.id}` at the next step; its checkpoint is kept: **Resume** continues from it."


def resumable(job) -> bool:
    """A stopped or failed distillation that left a checkpoint (and was not resumed to the end since)."""
    from qtinker.distill.checkpoint import checkpoint_left

    return bool(job and job.out and job.status in ("stopped", "failed", "failed (interrupted)") and checkpoint_left(job.out))


def resume_latest() -> str:
    """Run the latest distillation's own command again with --resume (same settings, same output folder)."""
    job = jobs.latest_job("distill")
    if not resumable(job):
        return "Nothing to resume: the latest distillation is running, finished, or left no checkpoint."
    program = job.argv[:job.argv.index(job.command)] if job.command in job.argv else []  # python -m qtinker, or torchrun
    try:
        again = jobs.start_job("distill", [*[a for a in job.args if a != "--resume"], "--resume"], slot=job.slot,
                               title=job.title.removesuffix(" (resumed)") + " (resumed)", out=job.out,
                               program=program or None)
    except QTinkerError as exc:
        return f"**Error:** {exc}"
    return f"Resumed as job `{again.id}` from `{job.out}.partial`; it keeps running if you close this tab."


def status_text(job) -> str:
    """The finish summary (once done) above the job's status."""
    summary = live.distill_summary(job)
    return (summary + "\n\n" if summary else "") + live.status_markdown(job, "distillation")


def progress_text(job) -> str:
    warn = live.warnings_markdown(job)
    return live.progress_markdown(job) + ("\n\n" + warn if warn else "")


def view(seen: tuple):
    """Once a second (and on page load): the latest distillation's live state.
    seen: (signature, (series drawn in the student's plot, in the teacher's))."""
    job = jobs.latest_job("distill")
    sig = live.signature(job)
    last_sig, (drawn, drawn_teacher) = seen or (None, ((), ()))
    if sig == last_sig:  # nothing new on disk; while running the clocks (elapsed, ETA) still move
        head = (status_text(job), progress_text(job)) if job and job.running else (gr.skip(),) * 2
        return (*head, *[gr.skip()] * 6, seen)
    plot, drawn = live.plot_value(live.loss_frame(job), "series", drawn)
    teacher_frame = live.loss_frame(job, "teacher")
    teacher_plot, drawn_teacher = live.plot_value(teacher_frame, "series", drawn_teacher)
    redraw = drawn is None or drawn_teacher is None
    return (status_text(job), progress_text(job), plot, gr.update(value=teacher_plot, visible=len(teacher_frame) > 0),
            live.eval_frame(job), live.log_text(job, 8), gr.update(interactive=bool(job and job.running)),
            gr.update(visible=resumable(job)), (None if redraw else sig, (drawn or (), drawn_teacher or ())))


def field_updates() -> list:
    """Info text and defaults from DistillConfig (imported here, after launch: it imports torch)."""
    from qtinker.core.config import field_choices, field_help
    from qtinker.distill.config import DistillConfig

    defaults = DistillConfig()
    updates = []
    for name in COMMON_FIELDS:
        update = {"info": common.page_words(field_help(DistillConfig, name))}
        if name not in ("student_from_teacher", "student_config"):  # the UI's own starting values stay
            update["value"] = getattr(defaults, name)
        if field_choices(DistillConfig, name):
            update["choices"] = field_choices(DistillConfig, name)
        updates.append(gr.update(**update))
    return updates


def build(timer: gr.Timer, demo: gr.Blocks) -> tuple[gr.Dropdown, gr.Dropdown]:
    gr.Markdown("Train a small **student** to imitate a big **teacher** on your task. The run happens in the background: "
                "closing or reloading this page does not stop it.")
    with gr.Row(elem_id="distill_models"):
        with gr.Column():
            teacher = gr.Dropdown(label="Teacher", choices=common.model_names(quantized=False), allow_custom_value=True,
                                  info="the big model whose behaviour is copied")
            teacher_info = gr.Markdown()
        with gr.Column():
            student = gr.Dropdown(label="Student", choices=student_choices(), value=FROM_TEACHER, allow_custom_value=True,
                                  info="a small local model, N of the teacher's layers, or a fresh custom shape")
            n_layers = gr.Number(label="Student layers (from the teacher)", value=2, precision=0, minimum=1)
            custom = gr.Textbox(label="Custom student: layers, hidden, heads", value="4, 256, 4", visible=False)
            student_info = gr.Markdown()
    form_note = gr.Markdown(elem_id="distill_form_note")
    compat = gr.Markdown(elem_id="compatibility")
    with gr.Row():
        data_choice = gr.Radio([SAMPLE, UPLOAD], value=SAMPLE, label="Training data", elem_id="distill_data_choice")
        upload = gr.File(label="Data file (CSV / TSV / JSONL with text + label, or TXT)", type="filepath",
                         file_types=[".csv", ".tsv", ".jsonl", ".txt"], visible=False, elem_id="distill_data")
    with gr.Row():
        text_column = gr.Dropdown(label="Text column", choices=[AUTO], value="", visible=False, elem_id="text_column",
                                  info="which column holds the text (when it is not obvious)")
        label_column = gr.Dropdown(label="Label column", choices=[AUTO], value="", visible=False, elem_id="label_column",
                                   info="which column holds the answer to learn")
    data_summary = gr.Markdown(elem_id="data_summary")
    preview = gr.Dataframe(label="First rows", interactive=False, wrap=True, max_height=220)
    eval_upload = gr.File(label="Evaluation data (optional; same columns and classes as the training data)",
                          type="filepath", file_types=[".csv", ".tsv", ".jsonl"], visible=False, elem_id="distill_eval_data")
    eval_summary = gr.Markdown(elem_id="eval_summary")
    method = gr.Radio(["logit", "patient", "feature"], value="logit", label="Method", elem_id="method")
    with gr.Row():
        temperature = gr.Number(label="temperature", value=2.0)
        alpha = gr.Slider(0, 1, value=0.5, step=0.05, label="alpha (soft-target weight)")
    with gr.Row(visible=False) as patient_row:
        beta = gr.Number(label="beta (patient weight)", value=1.0,
                         info="relative to the other loss terms: 1 = as large as each of them at the start")
    with gr.Row(visible=False) as feature_row:
        hidden_weight = gr.Number(label="hidden_weight", value=1.0)
        attention_weight = gr.Number(label="attention_weight", value=1.0)
        embedding_weight = gr.Number(label="embedding_weight", value=1.0)
    layer_map = gr.Dropdown(["auto", "pkd-skip", "pkd-last", "uniform", "last"], value="auto", label="layer_map", visible=False)
    device_md = gr.Markdown("Device: detecting…", elem_id="device")
    gpus = gr.Slider(1, 2, value=1, step=1, label="GPUs to use", visible=False, elem_id="distill_gpus",
                     info="one process per GPU (torchrun); batch size is per GPU")
    with gr.Row(elem_id="distill_training"):
        epochs = gr.Number(label="epochs", value=3, precision=0, minimum=1)
        batch_size = gr.Number(label="batch size", value=32, precision=0, minimum=1)
        lr = gr.Number(label="learning rate", value=1e-4)
        max_length = gr.Number(label="max tokens", value=128, precision=0, minimum=8)
        teacher_epochs = gr.Number(label="Teacher fine-tune epochs", value=3, precision=0, minimum=0,
                                   elem_id="teacher_epochs")
        out_name = gr.Textbox(label="Output name", placeholder="default: <teacher>-<method>-student", info="folder under outputs/")
    with gr.Accordion("Advanced: loss balance, two-stage schedule, augmentation", open=False, elem_id="distill_advanced"):
        with gr.Row():  # info texts and defaults: DistillConfig's (field_updates)
            balance_losses = gr.Checkbox(label="balance losses", value=True, elem_id="balance_losses")
            balance_batches = gr.Number(label="balance batches", value=10, precision=0, minimum=1)
        with gr.Row(visible=False) as schedule_row:
            schedule = gr.Radio(["auto", "joint", "two-stage"], value="auto", label="schedule", elem_id="schedule")
            intermediate_epochs = gr.Number(label="intermediate epochs", value=0, precision=0, minimum=0)
        with gr.Row():
            augment = gr.Number(label="augment", value=0.0, minimum=0, elem_id="augment")
            unlabeled_upload = gr.File(label="unlabeled text (optional: TXT one text per line, or CSV / TSV / JSONL "
                                             "with a text column): extra examples the teacher labels, and the words "
                                             "augment draws from when the teacher has no masked-LM head",
                                       type="filepath", file_types=[".txt", ".csv", ".tsv", ".jsonl"],
                                       elem_id="distill_unlabeled")
    with gr.Row():
        start_button = gr.Button("Start distillation", variant="primary")
        stop_button = gr.Button("Stop", variant="stop", interactive=False)
        resume_button = gr.Button("Resume", visible=False, elem_id="distill_resume")
    plan_md = gr.Markdown(elem_id="distill_plan")
    estimate_md = gr.Markdown(elem_id="distill_estimate")
    started = gr.Markdown(elem_id="distill_started")
    gr.Markdown("### Live")
    status = gr.Markdown("No distillation yet.", elem_id="distill_status")
    progress = gr.Markdown(elem_id="distill_progress")
    with gr.Row():
        teacher_plot = gr.LinePlot(value=None, x="step", y="value", color="series", title="Teacher fine-tuning loss",
                                   x_title="teacher step", y_title="loss", height=280, visible=False)
        loss_plot = gr.LinePlot(value=None, x="step", y="value", color="series", title="Student training loss",
                                x_title="student step", y_title="loss", height=280)
        evals = gr.Dataframe(value=live.eval_frame(None), label="Evaluation per epoch (epoch 0 = the teacher)",
                             interactive=False, wrap=True, elem_id="distill_evals")
    log = gr.Textbox(label="Log (last lines)", lines=8, max_lines=8, autoscroll=True, interactive=False)

    pick = [teacher, student, n_layers, custom, method, teacher_epochs]
    for box in pick:  # never waits behind the timers' ticks; only the latest selection counts
        box.change(verdict, pick, compat, api_visibility="private", show_progress="hidden", concurrency_limit=None,
                   trigger_mode="always_last")
    teacher.change(model_card, teacher, teacher_info, api_visibility="private")
    for box in (teacher, student, n_layers, custom):
        box.change(model_card, [teacher, student, n_layers, custom], student_info, api_visibility="private")
    student.change(lambda s: (gr.update(visible=s == FROM_TEACHER), gr.update(visible=s == CUSTOM)), student,
                   [n_layers, custom], api_visibility="private")
    data_choice.change(lambda c: (gr.update(visible=c == UPLOAD),) * 2, data_choice, [upload, eval_upload],
                       api_visibility="private")
    columns = [text_column, label_column]
    data_in = [data_choice, upload, *columns]
    eval_in = [data_choice, upload, eval_upload, *columns]
    upload.change(data_preview, data_in, [preview, data_summary], api_name="data_preview")
    for box in (data_choice, upload):
        box.change(column_choices, [data_choice, upload, *columns], columns, api_visibility="private")
        box.change(eval_preview, eval_in, eval_summary, api_visibility="private")
    data_choice.change(data_preview, data_in, [preview, data_summary], api_visibility="private")
    for box in columns:  # .input: the user's pick (not the reset when a new file comes)
        box.input(data_preview, data_in, [preview, data_summary], api_visibility="private")
        box.input(eval_preview, eval_in, eval_summary, api_visibility="private")
    eval_upload.change(eval_preview, eval_in, eval_summary, api_name="eval_preview")
    method.change(lambda m: (gr.update(visible=m == "patient"), gr.update(visible=m == "feature"),
                             gr.update(visible=m != "logit"), gr.update(visible=m != "logit")), method,
                  [patient_row, feature_row, layer_map, schedule_row], api_visibility="private")
    plan_in = [teacher, data_choice, upload, eval_upload, *columns, epochs, teacher_epochs, batch_size]
    for box in (teacher, data_choice, upload, eval_upload, epochs, teacher_epochs, batch_size):
        box.change(plan, plan_in, plan_md, api_visibility="private", show_progress="hidden", trigger_mode="always_last")
    for box in columns:
        box.input(plan, plan_in, plan_md, api_visibility="private", show_progress="hidden")
    # the time estimate times a few steps of the chosen models: its own queue slot, so it never holds up the
    # page's other events, and only the latest choice is measured
    estimate_in = [teacher, student, n_layers, custom, method, data_choice, upload, eval_upload, unlabeled_upload,
                   *columns, epochs, teacher_epochs, batch_size, max_length, augment]
    gr.on([box.change for box in (teacher, student, n_layers, custom, method, data_choice, upload, eval_upload,
                                  unlabeled_upload, epochs, teacher_epochs, batch_size, max_length, augment)],
          time_estimate.estimate, estimate_in, estimate_md, api_visibility="private", show_progress="hidden",
          trigger_mode="always_last", concurrency_id="estimate", concurrency_limit=1)
    gr.api(verdict, api_name="compatibility")
    start_button.click(start, [teacher, student, n_layers, custom, data_choice, upload, method, temperature, alpha, beta,
                               layer_map, hidden_weight, attention_weight, embedding_weight, epochs, batch_size, lr,
                               max_length, out_name, gpus, teacher_epochs, eval_upload, text_column, label_column,
                               balance_losses, balance_batches, schedule, intermediate_epochs, augment, unlabeled_upload],
                       started, api_name="distill_start")
    stop_button.click(stop_latest, None, started, api_name="distill_stop")
    resume_button.click(resume_latest, None, started, api_name="distill_resume")

    seen = gr.State(())
    live_outputs = [status, progress, loss_plot, teacher_plot, evals, log, stop_button, resume_button, seen]
    timer.tick(view, seen, live_outputs, api_visibility="private", show_progress="hidden")
    refresh = lambda: (gr.update(choices=common.model_names(quantized=False)), gr.update(choices=student_choices()))  # noqa: E731
    demo.load(refresh, None, [teacher, student], api_visibility="private")
    demo.load(view, seen, live_outputs, api_visibility="private")  # re-attach to a run after a reload
    demo.load(lambda: common.device_markdown(), None, device_md, api_visibility="private")
    demo.load(gpu_choice, None, gpus, api_visibility="private")
    demo.load(data_preview, data_in, [preview, data_summary], api_visibility="private")
    demo.load(eval_preview, eval_in, eval_summary, api_visibility="private")
    form = [teacher, student, n_layers, custom, data_choice, upload, eval_upload, text_column, label_column, method,
            temperature, alpha, beta, layer_map, hidden_weight, attention_weight, embedding_weight, epochs, batch_size,
            lr, max_length, teacher_epochs, out_name, balance_losses, balance_batches, schedule, intermediate_epochs,
            augment, unlabeled_upload]
    demo.load(field_updates, None, [method, temperature, alpha, beta, layer_map, hidden_weight, attention_weight,
                                    embedding_weight, epochs, batch_size, lr, max_length, teacher_epochs, n_layers, custom,
                                    balance_losses, balance_batches, schedule, intermediate_epochs, augment],
              api_visibility="private").then(restore_form, None, [*form, form_note], api_visibility="private")
    return teacher, student
