"""What a person says about a run's answers in Chat, kept, and trained on in the run's next version.

Each mark is one line of RUN_DIR/feedback.jsonl: the conversation asked (`messages`, the system prompt and the turns
up to the question), the question itself (`prompt`), the fine-tuned model's `answer`, and the person's `correction`
(the answer it should have given) and/or `rating` ("good" or "bad"), with the `time`. Appending a line never
rewrites the file: nothing said earlier can be lost by a later mark.

"Train v2 with my corrections" (`studio train --from-run RUN_DIR`) copies the parent's corrections into the new
run's folder (CORRECTIONS_FILE): the v2 trains on what was said when it started, whatever is marked afterwards. The
corrections train either way: as supervised rows (the correction is the answer to learn), repeated so that a
handful weigh against hundreds of data rows, or as preference pairs (chosen = the correction, rejected = the
model's answer) for DPO and ORPO.

Nothing here imports torch or gradio.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, UserError

log = logging.getLogger("studio.feedback")

FEEDBACK_FILE = "feedback.jsonl"  # in a run's folder: the marks made on its answers
CORRECTIONS_FILE = "corrections.jsonl"  # in a v2's folder: its parent's corrections as they were when it started
RATINGS = ("good", "bad")
# Corrections repeated so that together they are about this share of the rows an epoch trains on: five corrections
# beside 300 rows would otherwise be 1.6% of what the model sees, and change nothing it says.
CORRECTION_SHARE = 0.2
MAX_REPEATS = 20  # ... but one correction is never seen more than this many times an epoch (learnt by heart)
MAX_TEXT_CHARS = 20_000  # a correction is an answer, not a document


@dataclass
class Feedback:
    messages: list[dict]  # the conversation up to and including the question: system? + user/assistant turns
    answer: str  # what the fine-tuned model said
    correction: str = ""  # what it should have said ("" for a rating alone)
    rating: str = ""  # "good", "bad" or ""
    time: float = field(default_factory=time.time)

    @property
    def prompt(self) -> str:
        """The question answered: the last user turn."""
        return next((m["content"] for m in reversed(self.messages) if m.get("role") == "user"), "")

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, **dataclasses.asdict(self)}

    def key(self) -> tuple:
        """Equal for marks on the same answer to the same conversation: the newest one counts."""
        return tuple((m["role"], m["content"]) for m in self.messages), self.answer


def feedback_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / FEEDBACK_FILE


def record(run_dir: str | Path, messages: list[dict], answer: str, correction: str = "",
           rating: str = "") -> Feedback:
    """Append one mark to the run's feedback file and return it. Refused in one sentence: no question, no answer,
    neither a correction nor a rating, a correction equal to the answer, an unknown rating."""
    run_dir = Path(run_dir)
    if not (run_dir / "adapter").is_dir():
        raise UserError(f"Run {run_dir.name} has no fine-tuned model to correct: pick a finished run in Chat first.")
    messages = [{"role": str(m.get("role", "")), "content": str(m.get("content") or "")} for m in messages or []]
    feedback = Feedback(messages=messages, answer=(answer or "").strip(), correction=(correction or "").strip(),
                        rating=(rating or "").strip().lower())
    if not feedback.prompt.strip():
        raise UserError("There is no question to attach this to: send a message in Chat first.")
    if not feedback.answer:
        raise UserError("The fine-tuned model has not answered yet: wait for its answer, then correct or rate it.")
    if feedback.rating and feedback.rating not in RATINGS:
        raise UserError(f"A rating is 'good' or 'bad', not {feedback.rating!r}.")
    if not feedback.correction and not feedback.rating:
        raise UserError("Write the answer the model should have given (or mark the answer good or bad) first.")
    if feedback.correction and feedback.correction == feedback.answer:
        raise UserError("The correction is the same as the model's answer: edit it to the answer you want, or mark "
                        "the answer as good instead.")
    if len(feedback.correction) > MAX_TEXT_CHARS:
        raise UserError(f"The correction is {len(feedback.correction):,} characters long: keep it under "
                        f"{MAX_TEXT_CHARS:,} (it is one answer, not a document).")
    line = json.dumps(feedback.to_dict(), ensure_ascii=False) + "\n"
    with open(feedback_file(run_dir), "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # two browser tabs marking at once never interleave their lines
        f.write(line)
        f.flush()
    return feedback


def read(path: str | Path) -> list[Feedback]:
    """Every mark in a feedback (or corrections) file, oldest first; a damaged line is skipped (and logged), a
    missing file is no marks."""
    path = Path(path)
    if path.is_dir():
        path = feedback_file(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    marks = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            marks.append(_checked(json.loads(line)))
        except (ValueError, KeyError, TypeError) as err:
            log.info("%s line %d skipped: %s", path, number, err)
    return marks


def _checked(row: dict) -> Feedback:
    """A mark read back, held to what `record` writes (a file edited by hand may hold anything): the conversation
    a list of system / user / assistant turns of text ending with the question, the answer text, the correction
    text or none, the rating good, bad or none."""
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise ValueError("no conversation")
    for m in messages:
        if m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
            raise ValueError(f"a turn that is not system, user or assistant text: {m!r}")
    if messages[-1]["role"] != "user":
        raise ValueError("the conversation does not end with the question")
    answer, correction, rating = row["answer"], row.get("correction") or "", row.get("rating") or ""
    if not isinstance(answer, str) or not answer.strip() or not isinstance(correction, str):
        raise ValueError("the answer or the correction is not text")
    if rating not in ("", *RATINGS):
        raise ValueError(f"rating {rating!r}")
    return Feedback(messages=[{"role": m["role"], "content": m["content"]} for m in messages], answer=answer,
                    correction=correction.strip(), rating=rating, time=float(row.get("time") or 0.0))


def latest(marks: list[Feedback]) -> list[Feedback]:
    """One mark per answer, the newest: a correction made twice counts once, as last written; a later rating of an
    answer keeps the correction written before it."""
    newest: dict[tuple, Feedback] = {}
    for mark in marks:
        earlier = newest.get(mark.key())
        if earlier is not None and not mark.correction:
            mark = dataclasses.replace(mark, correction=earlier.correction)
        newest[mark.key()] = mark
    return list(newest.values())


def corrections(marks: list[Feedback]) -> list[Feedback]:
    return [m for m in latest(marks) if m.correction]


@dataclass(frozen=True)
class Counts:
    corrections: int
    good: int
    bad: int

    def sentence(self) -> str:
        if not (self.corrections or self.good or self.bad):
            return "This run has no corrections yet."
        text = f"This run has {self.corrections} correction{'s' if self.corrections != 1 else ''}"
        marked = self.good + self.bad
        if marked:
            text += f" and {marked} answer{'s' if marked != 1 else ''} marked ({self.good} good, {self.bad} bad)"
        return text + "."


def counts(run_dir: str | Path) -> Counts:
    marks = latest(read(feedback_file(run_dir)))
    return Counts(corrections=sum(1 for m in marks if m.correction),
                  good=sum(1 for m in marks if m.rating == "good"),
                  bad=sum(1 for m in marks if m.rating == "bad"))


def repeats(n_corrections: int, n_train_rows: int) -> int:
    """How many times each correction is trained on per epoch: together about CORRECTION_SHARE of the rows, at
    least once, at most MAX_REPEATS."""
    if n_corrections <= 0:
        return 0
    return max(1, min(MAX_REPEATS, math.ceil(CORRECTION_SHARE * n_train_rows / n_corrections)))


def as_conversation(mark: Feedback, answer: str) -> list[dict]:
    return [*mark.messages, {"role": "assistant", "content": answer}]


def correction_rows(path: str | Path, n_train_rows: int) -> list[dict]:
    """The corrections of a corrections file as supervised rows ({"messages": [...]}, the correction the answer),
    each repeated (see `repeats`), for the training split only: the validation rows stay the data's own."""
    marks = corrections(read(path))
    times = repeats(len(marks), n_train_rows)
    return [{"messages": as_conversation(m, m.correction)} for m in marks for _ in range(times)]


def preference_rows(path: str | Path) -> list[dict]:
    """The corrections as preference pairs in the chat-style shape (Anthropic HH, UltraFeedback exports): chosen
    = the conversation ending with the correction, rejected = the same ending with the model's answer."""
    return [{"chosen": as_conversation(m, m.correction), "rejected": as_conversation(m, m.answer)}
            for m in corrections(read(path))]


def write_preference_file(run_dir: str | Path, dest: str | Path) -> int:
    """The run's corrections as a JSONL preference file (one pair a line), ready to upload in the Data tab and
    train with DPO or ORPO. Returns how many pairs."""
    from .fileio import write_text

    rows = preference_rows(feedback_file(run_dir))
    if not rows:
        raise UserError(f"Run {Path(run_dir).name} has no corrections yet: correct an answer in Chat first.")
    write_text(dest, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return len(rows)


# --- the next version ---------------------------------------------------------------------
def snapshot(parent_dir: str | Path, run_dir: str | Path) -> tuple[Path, int]:
    """Copy the parent's corrections (one per answer, the newest) into the new run's folder: (file, how many)."""
    from .fileio import write_text

    marks = corrections(read(feedback_file(parent_dir)))
    dest = Path(run_dir) / CORRECTIONS_FILE
    write_text(dest, "".join(json.dumps(m.to_dict(), ensure_ascii=False) + "\n" for m in marks))
    return dest, len(marks)


def next_version_config(parent_dir: str | Path, config=None):
    """The RunConfig of the parent's next version: the parent's own settings (or `config`, a RunConfig whose
    training settings replace them), with parent_run naming the parent. corrections_path is set once the new
    run's folder exists (`snapshot`). Refused in one sentence when the parent has no adapter to start from."""
    from .config import RunConfig
    from .events import ADAPTER_DIR, CONFIG_FILE

    parent_dir = Path(parent_dir)
    if not (parent_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"{parent_dir} is not a run folder (it has no {CONFIG_FILE}): give a folder under runs/, "
                          f"such as runs/20261206-101500-support.")
    if not (parent_dir / ADAPTER_DIR).is_dir():
        raise ConfigError(f"Run {parent_dir.name} has no saved fine-tuned model to start from: let it finish (or "
                          f"stop it, which saves one), then train its next version.")
    parent = RunConfig.load(parent_dir / CONFIG_FILE)
    chosen = config if config is not None else parent
    # The base model and the adapter's shape are the parent's: the v2 continues the parent's adapter.
    kept = {name: getattr(parent, name) for name in ("model", "trust_remote_code", "lora_rank", "lora_alpha",
                                                      "target_modules")}
    version = lineage_depth(parent_dir) + 2
    name = parent.run_name or Path(parent.data_path).stem or "run"  # not the parent's id: no timestamp twice
    return dataclasses.replace(chosen, **kept, parent_run=parent_dir.name, corrections_path="",
                               run_name=f"{_without_version(name)} v{version}")


def _without_version(name: str) -> str:
    import re

    return re.sub(r"\s+v\d+$", "", name)


def parent_adapter(run_dir: str | Path, parent_run: str) -> Path:
    """The adapter a v2 starts from: its parent's, a sibling folder of the run."""
    from .events import ADAPTER_DIR
    from .jobs import validate_run_id

    path = Path(run_dir).parent / validate_run_id(parent_run) / ADAPTER_DIR  # a run id, never a path elsewhere
    if not path.is_dir():
        raise ConfigError(f"The parent run {parent_run} has no saved adapter (deleted or moved?): train this run "
                          f"from scratch by clearing parent_run in its config.")
    return path


def lineage(run_dir: str | Path) -> list[str]:
    """The run ids from the first version to this one (v1 -> v2 -> v3), following each config's parent_run; a
    parent that is gone ends the chain, a loop is cut."""
    from .events import CONFIG_FILE

    run_dir = Path(run_dir)
    chain = [run_dir.name]
    current = run_dir
    while len(chain) < 100:
        try:
            parent = json.loads((current / CONFIG_FILE).read_text(encoding="utf-8")).get("parent_run") or ""
        except (OSError, ValueError, AttributeError):
            break
        if not parent or parent in chain:
            break
        chain.insert(0, parent)
        current = run_dir.parent / parent
    return chain


def lineage_depth(run_dir: str | Path) -> int:
    """How many versions came before this run (0 for a run trained from the base model alone)."""
    return len(lineage(run_dir)) - 1


def start_fields(config) -> dict:
    """What a run's "start" event says of its lineage: the parent, and how many corrections it trains on (each
    repeated how many times); nothing for a run from the base model alone."""
    if not config.parent_run and not config.corrections_path:
        return {}
    n = len(corrections(read(config.corrections_path))) if config.corrections_path else 0
    return {"parent_run": config.parent_run or None, "corrections": n}


def require_corrections(parent_dir: str | Path) -> int:
    """How many corrections the parent has; none is refused in one sentence (a v2 would be the v1 trained again)."""
    n = counts(parent_dir).corrections
    if n == 0:
        raise ConfigError(f"Run {Path(parent_dir).name} has no corrections yet: in Chat, correct a few answers of "
                          f"its fine-tuned model ('Correct this'), then train its next version.")
    return n
