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

# Words inside longer column names, in several languages ("Customer question", "Our reply", "Frage des Kunden",
# "Réponse"): compared with accents and case off, as whole words (or as a part, for scripts without spaces).
# A match by word is less sure than an exact name above, so the Data tab opens the mapping for a confirmation.
PROMPT_WORDS = (
    "question", "questions", "query", "prompt", "instruction", "request", "ask", "asked", "input", "inquiry",
    "enquiry", "message", "customer", "user", "client", "patient",
    "demande", "requete", "entree", "consigne",  # French (question, client: as in English)
    "frage", "fragen", "anfrage", "eingabe", "kunde", "kundenfrage", "anweisung",  # German
    "pregunta", "consulta", "entrada", "solicitud", "cliente", "instruccion",  # Spanish
    "domanda", "richiesta", "quesito", "istruzione",  # Italian
    "pergunta", "pedido", "instrucao",  # Portuguese
    "vraag", "verzoek", "klant",  # Dutch
    "fraga", "sporsmal", "kysymys",  # Swedish, Norwegian/Danish, Finnish
    "pytanie", "zapytanie", "soru", "otazka",  # Polish, Turkish, Czech
    "вопрос", "запрос", "питання",  # Russian, Ukrainian
    "问题", "提问", "問題", "質問", "质问", "질문", "سؤال", "प्रश्न",  # Chinese, Japanese, Korean, Arabic, Hindi
)
RESPONSE_WORDS = (
    "answer", "answers", "reply", "replies", "response", "responses", "output", "completion", "solution",
    "assistant", "agent", "support", "resolution",
    "reponse", "sortie", "solution",  # French
    "antwort", "antworten", "ausgabe", "losung", "erwiderung",  # German
    "respuesta", "salida", "solucion",  # Spanish
    "risposta", "uscita", "soluzione",  # Italian
    "resposta", "saida", "solucao",  # Portuguese
    "antwoord", "oplossing",  # Dutch
    "svar", "vastaus",  # Swedish/Norwegian/Danish, Finnish
    "odpowiedz", "cevap", "yanit", "odpoved",  # Polish, Turkish, Czech
    "ответ", "відповідь",  # Russian, Ukrainian
    "回答", "答案", "回复", "答复", "返答", "응답", "답변", "جواب", "उत्तर",  # Chinese, Japanese, Korean, Arabic, Hindi
)
