"""Before Start: how long the distillation will take here (qtinker.distill.estimate times a few steps of the
chosen models on this device; this module only gathers the form's choices and words the answer)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from qtinker import jobs
from qtinker.core.errors import QTinkerError
from qtinker.ui import common
from qtinker.ui.compatibility import CUSTOM, FROM_TEACHER, verdict
from qtinker.ui.data_choice import read_data
from qtinker.ui.live import human_seconds


def run_config(teacher, student, n_layers, custom, method, epochs, teacher_epochs, batch_size, max_length, augment):
    """The DistillConfig the form would start (the fields that decide the run's length)."""
    from qtinker.distill.config import DistillConfig

    t = common.find_model(teacher)
    shape = {}
    if student == FROM_TEACHER:
        shape["student_from_teacher"] = int(n_layers)
    elif student == CUSTOM:
        shape["student_config"] = [int(x) for x in re.findall(r"\d+", custom or "")]
    else:
        shape["student"] = str(common.find_model(student).path)
    return DistillConfig(teacher=str(t.path), method=method, epochs=int(epochs), teacher_epochs=int(teacher_epochs or 0),
                         batch_size=int(batch_size), max_length=int(max_length), augment=float(augment or 0), **shape)


def estimate(teacher, student, n_layers, custom, method, choice, upload, eval_upload, unlabeled_upload, text_column,
             label_column, epochs, teacher_epochs, batch_size, max_length, augment) -> Iterator[str]:
    """The run's estimated duration per stage; says first that it is measuring (a few seconds on a CPU), and
    measures nothing while a job holds the device (it would slow the job and be slowed by it)."""
    from qtinker.data.loaders import load_unlabelled
    from qtinker.distill.config import DistillConfig
    from qtinker.distill.estimate import estimate_device, run_seconds, step_times, typical_length

    if not (epochs and batch_size and max_length) or min(int(epochs), int(batch_size), int(max_length)) < 1:
        yield ""
        return
    if not verdict(teacher, student, n_layers, custom, method, teacher_epochs).startswith("**Compatible**"):
        yield ""  # the verdict above says why
        return
    try:
        train, held = read_data(choice, upload, eval_upload, text_column, label_column)
        extra = len(load_unlabelled(common.check_upload(unlabeled_upload, common.DATA_UPLOAD_MAX, "data file"))
                    ) if unlabeled_upload else 0
    except QTinkerError:
        yield ""  # the data's own message is shown above
        return
    if isinstance(train, list):
        yield ""  # task-agnostic (masked-word) distillation: not estimated
        return
    config = run_config(teacher, student, n_layers, custom, method, epochs, teacher_epochs, batch_size, max_length, augment)
    n_teacher_train = len(train) - round(len(train) * DistillConfig().holdout)
    n_train, n_eval = (len(train), len(held)) if held is not None else (n_teacher_train, len(train) - n_teacher_train)
    try:
        length = typical_length(config.teacher, train.texts, config.max_length)
        num_labels = max(2, len(train.label_names))
        times = step_times(config, length, num_labels, measure=False)
        if times is None:
            busy = jobs.running_job(common.device_slot())
            if busy is not None:
                yield (f"Time estimate: after `{busy.id}` has finished (timing steps now would slow it down, "
                       "and be slowed by it).")
                return
            yield f"Estimating the time: timing a few steps of these models on this {device_word(estimate_device())}…"
            times = step_times(config, length, num_labels)
    except (QTinkerError, OSError, RuntimeError, ValueError) as exc:  # a model that will not load: Start says why
        yield f"Time estimate: not available ({common.page_words(str(exc)).splitlines()[0]})."
        return
    # a head for other classes is fine-tuned too (the run compares the label names; the count says most of it)
    fine_tune = common.find_model(teacher).num_labels != (len(train.label_names) or 1) and config.teacher_epochs > 0
    run = run_seconds(times, config, n_train, n_teacher_train, n_eval, fine_tune, extra)
    parts = [f"teacher fine-tuning {human_seconds(run.teacher_s)}"] if run.teacher_s else []
    parts += [f"teacher outputs {human_seconds(run.cache_s)}", f"student {human_seconds(run.student_s)}"]
    yield (f"Estimated time on this {device_word(times.device)}: **about {human_seconds(run.total_s)}** "
           f"({', '.join(parts)}). *An estimate* from a few timed steps of these models here (batch {times.batch_size} "
           f"× {times.length} tokens, the data's typical length); loading and saving come on top, and the live view "
           "shows the real ETA once it runs.")


def device_word(device: str) -> str:
    return "GPU" if device.startswith("cuda") else "Mac GPU" if device == "mps" else "CPU"
