"""Typed examples: what one usable row becomes, whatever its file's format.

`Chat` (a conversation; pair formats become system? + user + assistant), `Text` (plain text, trained on whole) or
`Preference` (a prompt with a chosen and a rejected answer). Code that needs the kind matches on the class
(`match example: case Preference(): ... case Chat(): ... case Text(): ...`). A Preference is a Chat of its prompt
and chosen answer plus the rejected answer, so code that does not ask for the rejected answer (supervised training,
the preview, the checks, the report card's reference) reads it as the chosen conversation.

The dict shape ({"messages": [...]} or {"text": ...}) stays at the boundary with code that has not switched yet
(`to_dict`, `as_example`): the cleaned JSONL copy holds it, and chat.py reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from ..errors import DataError


class Message(TypedDict):
    role: str  # "system", "user" or "assistant"
    content: str


@dataclass
class Chat:
    messages: list[Message]  # the last turn is an assistant answer; roles as ROLE_ALIASES maps them

    def to_dict(self) -> dict[str, Any]:
        return {"messages": [dict(m) for m in self.messages]}

    @property
    def prompt(self) -> str:
        """The first user turn: what the person asked, quoted in problems and compared across rows."""
        return next((m["content"] for m in self.messages if m["role"] == "user"), "")

    @property
    def first_answer(self) -> str:
        """The assistant turn that answers the first user turn (what contradicts when two rows ask the same)."""
        asked = False
        for m in self.messages:
            asked = asked or m["role"] == "user"
            if asked and m["role"] == "assistant":
                return m["content"]
        return ""

    @property
    def answer(self) -> str:
        """The last assistant turn."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "assistant"), "")

    def with_system(self, prompt: str) -> Chat:
        """The conversation with this system prompt when it has none of its own (a system column wins)."""
        prompt = (prompt or "").strip()
        if not prompt or (self.messages and self.messages[0]["role"] == "system"):
            return self
        return Chat([{"role": "system", "content": prompt}, *self.messages])

    def key(self) -> tuple:
        """Equal for exact repeats (same turns, same roles)."""
        return tuple((m["role"], m["content"]) for m in self.messages)

    def chars(self) -> int:
        return sum(len(m["content"]) for m in self.messages)


@dataclass
class Text:
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text}

    @property
    def prompt(self) -> str:
        return self.text

    @property
    def answer(self) -> str:
        return ""  # plain text has no answer of its own: contradiction checks skip it

    def with_system(self, prompt: str) -> Text:
        return self  # plain text has no turns: a system prompt has nowhere to go

    def key(self) -> str:
        return self.text

    def chars(self) -> int:
        return len(self.text)


@dataclass
class Preference(Chat):
    """A preference pair: `messages` is the prompt (system + turns up to the question) and the chosen answer as the
    last assistant turn; `rejected` is the worse answer to the same prompt. DPO and ORPO (studio/train.py) train the
    model to find the chosen answer more likely than the rejected one."""

    rejected: str = ""

    @property
    def prompt_messages(self) -> list[Message]:
        """Every turn before the chosen answer."""
        return self.messages[:-1]

    @property
    def chosen(self) -> str:
        return self.messages[-1]["content"]

    def chosen_chat(self) -> Chat:
        """The prompt and the chosen answer alone: what supervised training learns from a pair."""
        return Chat(list(self.messages))

    def rejected_chat(self) -> Chat:
        """The prompt and the rejected answer: how likely a model finds the worse answer (the report card)."""
        return Chat([*self.prompt_messages, {"role": "assistant", "content": self.rejected}])

    def to_dict(self) -> dict[str, Any]:
        return {"messages": [dict(m) for m in self.messages], "rejected": self.rejected}

    def trl_row(self) -> dict[str, Any]:
        """TRL's conversational preference shape: {"prompt": turns, "chosen": [answer], "rejected": [answer]}."""
        return {"prompt": [dict(m) for m in self.prompt_messages],
                "chosen": [{"role": "assistant", "content": self.chosen}],
                "rejected": [{"role": "assistant", "content": self.rejected}]}

    def with_system(self, prompt: str) -> Preference:
        chat = Chat.with_system(self, prompt)
        return self if chat is self else Preference(chat.messages, self.rejected)

    def key(self) -> tuple:
        return (*Chat.key(self), ("rejected", self.rejected))

    def chars(self) -> int:
        return Chat.chars(self) + len(self.rejected)


Example = Chat | Text  # Preference is a Chat


def as_example(value: Example | dict) -> Example:
    """A typed example from either shape: dicts come from the cleaned JSONL copy and from code not yet switched."""
    if isinstance(value, (Chat, Text)):
        return value
    if isinstance(value, dict) and isinstance(value.get("messages"), list) and isinstance(value.get("rejected"), str):
        return Preference([{"role": m["role"], "content": m["content"]} for m in value["messages"]],
                          value["rejected"])
    if isinstance(value, dict) and isinstance(value.get("messages"), list):
        return Chat([{"role": m["role"], "content": m["content"]} for m in value["messages"]])
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return Text(value["text"])
    raise DataError("An example must be {\"messages\": [...]} (with \"rejected\" for a preference pair) or "
                    "{\"text\": ...}: normalise it with load_data first.")
