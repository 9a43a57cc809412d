"""Column names people use for each part of an example, and the role names of conversation turns.

Compared after lower-casing and turning spaces and dashes into underscores (see formats._norm).
"""

from __future__ import annotations

# Column names we recognise, compared after lower-casing and turning spaces/dashes into underscores.
# Order matters: the first name present wins.
PROMPT_NAMES = ("prompt", "question", "query", "instruction", "input", "user", "human", "request", "message",
                "source", "src", "q", "context")
RESPONSE_NAMES = ("completion", "response", "answer", "output", "assistant", "gpt", "bot", "reply", "target",
                  "tgt", "chosen", "a")
SYSTEM_NAMES = ("system", "system_prompt", "system_message", "persona")
TEXT_NAMES = ("text", "content", "document", "body", "passage", "sentence", "paragraph")
CONVERSATION_NAMES = ("messages", "conversations", "conversation", "chat", "dialog", "dialogue", "turns")
ROLE_ALIASES = {"system": "system", "user": "user", "human": "user", "prompter": "user", "customer": "user",
                "assistant": "assistant", "gpt": "assistant", "bot": "assistant", "model": "assistant",
                "chatgpt": "assistant", "ai": "assistant"}
