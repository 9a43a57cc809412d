"""python -m studio {ui,train,data,chat,demo,export,serve,...}: each sub-command lives in its own module's main()."""

from __future__ import annotations

import importlib
import logging
import sys

from .logs import send_stderr_to_log, tell_user

COMMANDS = {
    "ui": ("studio.ui.app", "start the web app (default: http://127.0.0.1:7860)"),
    "train": ("studio.train", "fine-tune from a config file, headless; prints the run folder"),
    "data": ("studio.data", "detect the format of a data file, list its problems, preview it"),
    "chat": ("studio.chat", "ask the base and the fine-tuned model of a run the same prompt"),
    "demo": ("studio.ui.demo", "serve only the chat of one finished run, for a shared link"),
    "eval": ("studio.evaluate", "write a run's report card: task, general knowledge kept, parroting, verdict"),
    "export": ("studio.export", "zip a run's adapter or save merged full weights"),
    "tune": ("studio.tune", "search for good settings within a time budget (real trials, the weak ones stopped early)"),
    "queue": ("studio.run_queue", "runs waiting for the machine: add, list, remove, move, start (one after another)"),
    "serve": ("studio.serve", "serve a run's model behind an OpenAI-compatible API (/v1/chat/completions)"),
}


def usage() -> str:
    lines = ["usage: python -m studio COMMAND [options]   (python -m studio COMMAND --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<8}{help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        tell_user(f"Error: unknown command {name!r}.\n\n{usage()}")
        return 2
    # From here on stderr is the command's log: library warnings, progress bars and tracebacks go there, and our
    # own sentences reach the person through tell_user.
    log_file = send_stderr_to_log(name)
    try:
        module = importlib.import_module(COMMANDS[name][0])
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001 - a bug of ours still reaches the person as one sentence
        logging.getLogger("studio").exception("python -m studio %s failed", name)
        tell_user(f"Error: studio {name} failed unexpectedly ({type(err).__name__}); the details are in {log_file}.")
        return 1


if __name__ == "__main__":
    sys.exit(main())
