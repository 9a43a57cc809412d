"""Write the benchmark dataset in assets/bench/ (run once; the outputs are committed).

    python assets/bench/make_bench_data.py

Support chats of Harbor Notes, a note-taking and sync app invented for this project. What matters for a
training benchmark is the shape of the data, so it copies what real support logs look like:

- answers range from one line ("Yes, Plus includes offline notebooks.") to a several-paragraph
  troubleshooting guide with numbered steps, with a long tail: most rows are short, a few are long;
- some rows carry a system prompt, some are two-turn conversations (a follow-up question);
- prompts are short next to the long answers, as in support chats.

Rows are built from hand-written templates and slot values with a fixed seed, so the files are
reproducible. support_train.jsonl (360 rows) and support_val.jsonl (40 rows, a disjoint draw) are
OpenAI-style {"messages": [...]} JSONL.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SYSTEM = "You are the support assistant of Harbor Notes, a note-taking app that syncs across devices."
SIGN_OFF = "— Harbor Notes Support"

SLOTS = {
    "device": ["iPhone", "iPad", "Android phone", "Windows laptop", "MacBook", "Chromebook", "Linux desktop",
               "Galaxy tablet", "work PC", "Surface"],
    "os": ["Windows 11", "macOS Sonoma", "iOS 17", "Android 14", "ChromeOS", "Ubuntu 22.04", "Windows 10"],
    "plan": ["Free", "Plus", "Team", "Business"],
    "price": ["$4.99", "$8", "$12", "$49.99", "$96", "$6.50"],
    "count": ["200", "1,500", "3,000", "40", "12,000", "650"],
    "app": ["Evernote", "OneNote", "Notion", "Apple Notes", "Google Keep", "Bear", "Simplenote"],
    "month": ["January", "March", "April", "June", "August", "October", "November"],
    "notebook": ["Recipes", "Work", "Thesis", "Journal", "Meeting notes", "Travel", "Client A", "Garden"],
    "size": ["25 MB", "180 MB", "2 GB", "600 MB", "1.2 GB"],
    "format": ["PDF", "Markdown", "HTML", "Word"],
    "days": ["3", "10", "30", "14"],
}

GREETINGS = ["", "", "", "", "", "Hi, ", "Hello, ", "Hi there. ", "Hey, ", "Good morning. ", "Quick question: "]
TAILS = ["", "", "", "", " Thanks.", " Thanks in advance!", " Any ideas?", " Please help.", " This is urgent.",
         " I'm a bit lost."]
SHORT_CLOSE = ["", "", " Let me know if anything is unclear.", " Happy to help further if needed."]
FOLLOW_UPS = [
    ("That worked, thanks!", "Great to hear it's sorted. Enjoy your notes!"),
    ("Will this affect my other devices?", "Only if they are signed in to the same account: the change syncs to "
     "them within a minute or so, and nothing else on those devices changes."),
    ("Is there a way to do this from the phone app?", "Yes. The same option sits under the menu (three dots) > "
     "Settings in the phone app; the wording is identical, only the layout is more compact."),
    ("And what if it happens again?", "If it comes back, send us the diagnostics file from Help > Report a problem. "
     "It includes the sync log of the last seven days, so we can see exactly where it stopped without asking you "
     "to reproduce it."),
    ("How long does that usually take?", "Usually a few minutes. Very large accounts (tens of thousands of notes "
     "or many attachments) can take up to an hour the first time; the app shows the progress at the bottom of the "
     "sidebar."),
]

# Each intent: questions, a one-line answer, a paragraph, numbered steps, and extra paragraphs used by long
# answers (causes, edge cases, what to send us). Long answers stack these parts, as support agents do.
INTENTS: list[dict] = [
    {"q": ["My notes aren't syncing between my {device} and my {device2}.",
           "Sync is stuck: changes on my {device} never show up on the {device2}.",
           "Notes I write on the {device} don't appear anywhere else. Is sync broken?"],
     "short": ["Sign out and back in on the {device}; that restarts sync and fixes most stuck queues.",
               "Check that both devices use the same account under Settings > Account; most sync problems are "
               "two different sign-ins."],
     "para": ("Sync stops most often when one device is signed in to a second account, when the app on one "
              "device is more than two versions behind, or when a single large attachment blocks the queue. "
              "Open Settings > Account on both the {device} and the {device2} and compare the email shown there; "
              "then update both apps to the latest version."),
     "steps": ["On the {device}, open Settings > Account and note the email address.",
               "Do the same on the {device2}; if the addresses differ, sign out of one and sign in with the other.",
               "Update both apps from the app store (Settings > About shows your version).",
               "On the {device}, open Settings > Sync and tap Sync now; wait for the green tick.",
               "If the tick stays grey, tap Show queue and look for an item with a warning sign."],
     "extra": [("If the queue shows a warning next to an attachment, that file is usually above the {plan} plan's "
                "upload limit or was removed from the disk while it was uploading. Tap the item, choose Skip, and "
                "the rest of the queue will continue; you can re-attach the file afterwards."),
               ("On a work or school network, a firewall can block our sync servers. Try the same device on mobile "
                "data: if sync works there, ask your IT team to allow sync.harbornotes.example on port 443."),
               ("Nothing is lost while sync is stuck: every change is kept on the device where you made it and is "
                "sent as soon as the connection works again. Please don't reinstall the app before the queue is "
                "empty, because that would delete the changes that are still waiting.")]},
    {"q": ["How do I import my notes from {app}?", "I'm moving from {app}. Can I bring my {count} notes over?",
           "Is there an importer for {app}?"],
     "short": ["Yes: File > Import > {app} on the desktop app brings over notes, tags and attachments.",
               "Use File > Import > {app} on the desktop app; it keeps your notebooks and tags."],
     "para": ("The desktop app imports directly from {app}: choose File > Import > {app}, pick the export file "
              "or sign in when asked, and choose which notebooks to bring over. {count} notes usually take a few "
              "minutes; attachments are uploaded in the background afterwards."),
     "steps": ["In {app}, export your notes (the importer's first screen links to {app}'s own instructions).",
               "In Harbor Notes on a computer, open File > Import > {app}.",
               "Select the exported file or folder and choose the notebooks to import.",
               "Leave the app open until the progress bar at the bottom says Done.",
               "Check one or two notes with attachments before deleting anything in {app}."],
     "extra": [("Formatting comes across well for text, lists, tables and checkboxes. Drawings and embedded web "
                "clips are imported as images, and reminders become due dates on the note."),
               ("If the import stops part-way, start it again with the same file: notes that were already "
                "imported are recognised and skipped, so you won't get duplicates."),
               ("On the Free plan, imports count towards the monthly upload limit. For a large archive like "
                "yours ({count} notes), a one-month Plus trial avoids hitting the limit half-way.")]},
    {"q": ["I was charged {price} but I thought I cancelled.", "Why did you charge me {price} in {month}?",
           "There's a {price} charge from Harbor Notes on my card that I don't recognise."],
     "short": ["I can refund that: charges made within {days} days of a cancellation are refunded in full.",
               "That charge is the {plan} renewal; I've asked billing to refund it since you meant to cancel."],
     "para": ("Charges of {price} are usually the yearly or monthly renewal of the {plan} plan. If you cancelled "
              "in the app store rather than in Harbor Notes (or the other way round), the subscription may still "
              "have been active. Under Settings > Subscription you can see where the plan was bought and the date "
              "of the last charge."),
     "steps": ["Open Settings > Subscription and check where the plan was bought (web, App Store or Google Play).",
               "If it was bought on the web, choose Cancel renewal and then Request refund.",
               "If it was bought in an app store, open that store's subscriptions page; refunds go through them.",
               "You will receive an email confirming the cancellation; keep it for your records."],
     "extra": [("Refunds for web purchases reach your card within 5 to 10 working days. Your notes stay "
                "available after the plan ends; only the {plan} features (larger uploads, version history, "
                "shared notebooks) stop at the end of the paid period."),
               ("If the charge doesn't match any subscription of yours, it may come from a family member's "
                "account paid with your card. Reply with the last four digits of the card and the date, and "
                "we'll find the account it belongs to.")]},
    {"q": ["I deleted a notebook by accident. Can I get it back?",
           "My '{notebook}' notebook is gone. Help!", "How do I restore a note I deleted {days} days ago?"],
     "short": ["Yes: deleted notes stay in Trash for 30 days; open Trash and choose Restore.",
               "Open Trash in the sidebar, select the '{notebook}' notes and tap Restore."],
     "para": ("Deleted notes and notebooks go to the Trash and stay there for 30 days before they are removed "
              "for good. Open Trash in the sidebar, select what you need and choose Restore; the notes return to "
              "their original notebook, which is recreated if it was deleted too."),
     "steps": ["Open Trash at the bottom of the sidebar.",
               "Use the search box to find notes from the '{notebook}' notebook.",
               "Select them (Ctrl/Cmd+A selects everything shown) and choose Restore.",
               "Wait a moment for the restored notes to sync to your other devices."],
     "extra": [("If the notes are not in Trash, check whether someone else emptied it on a shared account, or "
                "whether the notebook was shared with you (deleting a shared notebook removes only your access). "
                "Plus, Team and Business plans also keep version history for a year: right-click a note and "
                "choose History."),
               ("After 30 days the Trash is emptied automatically. On Team and Business plans, an administrator "
                "can still recover notes for another 60 days from the admin console, so ask your admin if you "
                "are on one of those plans.")]},
    {"q": ["The app crashes when I open it on my {device}.", "Harbor Notes won't start on {os}.",
           "Every time I open a note with a big PDF the app closes."],
     "short": ["Update to the latest version; the crash on {os} was fixed in this week's release.",
               "Please update the app and restart the {device}; that clears the crash in most cases."],
     "para": ("Crashes on start-up usually come from a damaged local cache or an outdated version. Update the "
              "app first. If it still closes, clear the local cache (your notes are safe on the server and "
              "download again): on the desktop app hold Shift while starting it and choose Reset local data."),
     "steps": ["Update Harbor Notes to the latest version from the app store or our download page.",
               "Restart the {device}.",
               "If the app still closes, start it while holding Shift and choose Reset local data.",
               "Sign in again and wait while your notes download.",
               "If it crashes again, open Help > Report a problem right after restarting and send the report."],
     "extra": [("Before resetting, make sure the sync queue is empty if the app opens at all: changes that never "
                "reached the server would be lost. If the app doesn't open, the local data folder can be copied "
                "first; on {os} it is shown in Help > Open data folder of our web help page."),
               ("Very large PDF attachments (over {size}) are rendered page by page; on older devices this can "
                "run out of memory. Settings > Attachments > Open large PDFs externally shows them in your "
                "system's viewer instead."),
               ("If the crash report mentions a graphics driver, turning off Settings > Advanced > Hardware "
                "acceleration is a reliable workaround until the driver is updated.")]},
    {"q": ["What's the difference between {plan} and {plan2}?", "Is {plan} worth it for a small team?",
           "Does the {plan} plan include offline notebooks?"],
     "short": ["{plan} adds offline notebooks, 10 GB of uploads a month and version history.",
               "Yes, offline notebooks are included from Plus upwards."],
     "para": ("Free covers unlimited notes on two devices. Plus ({price} a month) adds unlimited devices, offline "
              "notebooks, 10 GB of uploads and a year of version history. Team adds shared notebooks with "
              "permissions and a shared billing account; Business adds single sign-on, audit logs and an admin "
              "console."),
     "steps": ["Open Settings > Subscription to see your current plan.",
               "Tap Compare plans for the full feature table.",
               "Start a 14-day trial of {plan}; you won't be charged until it ends.",
               "Cancel any time before the trial ends if it isn't right for you."],
     "extra": [("For a small team, Team is usually the better fit than several Plus accounts: the notebooks are "
                "owned by the team rather than by one person, so nothing is lost when someone leaves."),
               ("Students and teachers get 50% off Plus with a school email address, and non-profits get Team "
                "free for up to ten members. Both are applied from Settings > Subscription > Discounts.")]},
    {"q": ["How do I export everything as {format}?", "Can I export a notebook to {format}?",
           "I need all my notes in {format} for a backup."],
     "short": ["Right-click the notebook and choose Export > {format}.",
               "File > Export all > {format} on the desktop app exports every notebook at once."],
     "para": ("You can export a single note, a notebook or everything. On the desktop app choose File > Export "
              "all and pick {format}; each notebook becomes a folder and attachments are saved next to the "
              "notes. The export is yours to keep and works with no account at all."),
     "steps": ["Open the desktop app (exports are not available on phones).",
               "Choose File > Export all, or right-click one notebook and choose Export.",
               "Pick {format} and a folder on your computer.",
               "Wait for the confirmation; large accounts ({size} or more) take a few minutes."],
     "extra": [("{format} exports keep headings, lists, tables and images. Checklists become plain lists with "
                "[x] marks, and links between notes point to the exported files so they still work offline."),
               ("For a regular backup, Settings > Backups can run the same export every week to a folder of your "
                "choice, keeping the last four copies.")]},
    {"q": ["I can't log in, it says my password is wrong.", "I lost my phone and can't get the two-factor code.",
           "My account is locked after too many attempts."],
     "short": ["Use Forgot password on the sign-in screen; the reset link is valid for one hour.",
               "Locked accounts unlock automatically after 30 minutes."],
     "para": ("If the password is refused, use Forgot password on the sign-in screen; the reset email arrives "
              "within a few minutes (check the spam folder). For two-factor sign-in without your phone, use one "
              "of the backup codes you saved when you turned two-factor on."),
     "steps": ["On the sign-in screen, choose Forgot password and enter your email.",
               "Open the link in the email within one hour and set a new password.",
               "If two-factor is on and you don't have your phone, choose Use a backup code.",
               "Once signed in, go to Settings > Security and set up two-factor on your new phone."],
     "extra": [("If you have no backup codes, we can verify the account another way: reply with the date you "
                "created it, the plan you are on and the names of two notebooks. For your security this check "
                "takes up to two working days, and we never ask for your password."),
               ("After too many wrong attempts the account locks for 30 minutes. Waiting is enough; resetting the "
                "password during the lock also works and unlocks it straight away.")]},
    {"q": ["How do I share a notebook with a colleague?", "Can someone edit my notes without an account?",
           "How do I stop sharing the '{notebook}' notebook?"],
     "short": ["Right-click the notebook and choose Share; you can invite by email as viewer or editor.",
               "Open Share on the notebook and remove the person; their access ends immediately."],
     "para": ("Right-click the '{notebook}' notebook and choose Share. Invite people by email as viewers or "
              "editors, or create a link. Editors need an account (Free is enough); people with a view link can "
              "read without one. You can change or remove access at any time in the same window."),
     "steps": ["Right-click the '{notebook}' notebook and choose Share.",
               "Enter your colleague's email and choose Can view or Can edit.",
               "Add a message if you like and press Invite.",
               "To stop sharing, open the same window and press Remove next to the person or Disable link."],
     "extra": [("Shared notebooks count towards the owner's storage only. Changes by editors appear for everyone "
                "within seconds, and each note's history shows who changed what."),
               ("On the Free plan you can share up to three notebooks; Plus and above have no limit.")]},
    {"q": ["Can I use Harbor Notes offline?", "Will my notes be there on a plane?",
           "How do offline notebooks work on the {device}?"],
     "short": ["Yes: mark a notebook as Available offline (Plus and above) and it stays on the {device}.",
               "Notes you opened recently are cached; for whole notebooks, turn on Available offline."],
     "para": ("Every note you open is cached and readable offline. To keep a whole notebook on the {device}, "
              "right-click it and choose Available offline (Plus and above). Edits made offline are kept on the "
              "device and synced as soon as you are back online."),
     "steps": ["Right-click (or long-press) the notebook and choose Available offline.",
               "Wait for the download icon next to it to turn solid.",
               "Test it by switching on airplane mode and opening a note."],
     "extra": [("If two devices edit the same note while offline, both versions are kept: the note shows a "
                "banner to compare them and keep one, so nothing is overwritten silently."),
               ("Offline notebooks use disk space on the device ({size} or so for a notebook with many "
                "attachments). Settings > Storage shows the space used per notebook.")]},
    {"q": ["Search doesn't find words inside my PDFs.", "Why can't I search text in scanned documents?",
           "Search is slow on my {device}."],
     "short": ["Text in PDFs and images is indexed on Plus and above; it takes a few minutes after upload.",
               "Rebuild the search index under Settings > Advanced > Rebuild index."],
     "para": ("Harbor Notes reads the text in PDFs and images (including scans) and adds it to search on the "
              "Plus plan and above. New attachments are indexed within a few minutes of uploading. If older "
              "ones are missing, rebuilding the index under Settings > Advanced fixes it."),
     "steps": ["Check that your plan is Plus or above under Settings > Subscription.",
               "Open Settings > Advanced and choose Rebuild index.",
               "Keep the app open until the progress indicator in the sidebar disappears.",
               "Search again; scanned pages need to be upright and reasonably sharp to be read."],
     "extra": [("Handwriting is recognised in English, French, German and Spanish. Other languages are searched "
                "in typed text only for now."),
               ("On older devices, rebuilding the index for {count} notes can take a while and the app may feel "
                "slow during that time; it is back to normal once the index is complete.")]},
    {"q": ["Do you have an API?", "Can I connect Harbor Notes to my calendar?",
           "Is there a way to send emails into a notebook?"],
     "short": ["Yes: a REST API is available on Team and Business; keys are under Settings > Developer.",
               "Forward an email to your personal Harbor address (Settings > Email in) and it becomes a note."],
     "para": ("Team and Business plans include a REST API to read and create notes; keys are under Settings > "
              "Developer and the documentation is linked there. Every plan has an email-in address that turns "
              "forwarded emails into notes, and the calendar integration links meeting notes to events."),
     "steps": ["Open Settings > Developer and create an API key (Team and Business).",
               "Copy the key now; it is shown only once.",
               "Use it in the Authorization header of each request.",
               "Revoke keys you no longer use from the same page."],
     "extra": [("The API allows 600 requests a minute per workspace. Webhooks can notify your service when a "
                "note in a chosen notebook changes, which avoids polling."),
               ("The calendar integration works with Google Calendar and Microsoft 365: connect it under "
                "Settings > Integrations, and a 'Take notes' button appears on each event.")]},
]


def fill(text: str, slots: dict) -> str:
    return text.format(**slots)


def pick_slots(rng: random.Random) -> dict:
    slots = {k: rng.choice(v) for k, v in SLOTS.items()}
    slots["device2"] = rng.choice([d for d in SLOTS["device"] if d != slots["device"]])
    slots["plan2"] = rng.choice([p for p in SLOTS["plan"] if p != slots["plan"]])
    return slots


def answer(intent: dict, size: str, rng: random.Random, slots: dict) -> str:
    """One answer of the given size: 'line' (one sentence), 'para', 'steps' or 'guide' (several paragraphs)."""
    if size == "line":
        return fill(rng.choice(intent["short"]), slots) + rng.choice(SHORT_CLOSE)
    parts = [fill(intent["para"], slots)]
    if size in ("steps", "guide"):
        steps = intent["steps"] if size == "guide" else intent["steps"][: rng.randint(3, len(intent["steps"]))]
        parts.append("Here's how:\n" + "\n".join(f"{i}. {fill(s, slots)}" for i, s in enumerate(steps, 1)))
    if size == "guide":
        extras = list(intent["extra"])
        rng.shuffle(extras)
        parts += [fill(e, slots) for e in extras]
        parts.append("If none of this helps, reply to this message with your app version (Settings > About) and "
                     "the device you are using, and we'll look at your account directly.")
    return "\n\n".join(parts) + f"\n\n{SIGN_OFF}"


def make_row(rng: random.Random) -> dict:
    intent = rng.choice(INTENTS)
    slots = pick_slots(rng)
    # Long-tailed answer sizes: most support answers are a line or a paragraph, a few are full guides.
    size = rng.choices(["line", "para", "steps", "guide"], weights=[45, 28, 17, 10])[0]
    question = rng.choice(GREETINGS) + fill(rng.choice(intent["q"]), slots) + rng.choice(TAILS)
    messages = [{"role": "system", "content": SYSTEM}] if rng.random() < 0.5 else []
    messages += [{"role": "user", "content": question},
                 {"role": "assistant", "content": answer(intent, size, rng, slots)}]
    if rng.random() < 0.15:  # a follow-up turn
        follow_q, follow_a = rng.choice(FOLLOW_UPS)
        messages += [{"role": "user", "content": follow_q}, {"role": "assistant", "content": follow_a}]
    return {"messages": messages}


def write(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str]) -> int:
    rng = random.Random(20260501)
    rows, seen = [], set()
    while len(rows) < 400:
        row = make_row(rng)
        key = json.dumps(row, sort_keys=True)
        if key not in seen:  # no exact repeats, so validation rows never appear in training
            seen.add(key)
            rows.append(row)
    write(HERE / "support_train.jsonl", rows[:360])
    write(HERE / "support_val.jsonl", rows[360:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
