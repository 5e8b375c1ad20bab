"""Launch the QTinker web UI on 127.0.0.1; nothing else happens here.

    python app/app.py [--port N]

The port comes from --port, else GRADIO_SERVER_PORT (Pinokio passes {{port}}), else the
first free port from 7860. The server never shares publicly and serves only the outputs folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout without installing
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from qtinker import jobs  # noqa: E402
from qtinker.ui import build_app, launch_kwargs  # noqa: E402

demo = build_app()

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="QTinker web UI")
    parser.add_argument("--port", type=int, default=None, help="port to serve on (default: GRADIO_SERVER_PORT or the first free from 7860)")
    args = parser.parse_args()
    jobs.recover()  # jobs whose process is gone since the last run (app or machine restarted) are marked ended
    # quiet: Gradio would also print "To create a public link, set `share=True`", which this app never does;
    # the one line launchers (Pinokio) and tests wait for is printed here, as Gradio writes it
    _, url, _ = demo.queue(default_concurrency_limit=4).launch(**launch_kwargs(port=args.port), quiet=True,
                                                               prevent_thread_lock=True)
    print(f"* Running on local URL:  {url.rstrip('/')}", flush=True)
    demo.block_thread()
