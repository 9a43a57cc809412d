"""Write the sample datasets shipped in assets/samples/ (run once; the outputs are committed).

    python assets/samples/make_samples.py            # all samples
    python assets/samples/make_samples.py support    # only customer_support.jsonl

Each sample is built from hand-written templates and slot values combined with a fixed seed,
so it is varied, reproducible and realistic enough for a fine-tune to show a visible effect.
Brightwave, its plans and phone numbers are invented for this project.
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIGN_OFF = "— Brightwave Support"
SYSTEM = "You are the support assistant of Brightwave, a home internet provider."

# --- customer_support.jsonl (OpenAI messages) ------------------------------------------------
PLANS = {
    "Essential 100": ("100 Mbps", "$39"),
    "Plus 500": ("500 Mbps", "$59"),
    "Gig 1000": ("1 Gbps", "$79"),
    "Ultra 2000": ("2 Gbps", "$99"),
}
CITIES = ["Riverton", "Lakeside", "Northfield", "Millbrook", "Ashford", "Cedar Falls", "Bayview", "Oakridge",
          "Westhaven", "Elmstead"]
ROUTERS = ["Brightwave Hub 6", "Brightwave Hub 5", "Brightwave Hub 6 Pro"]
DEVICES = ["laptop", "smart TV", "PlayStation", "Xbox", "phone", "tablet", "work computer", "Chromebook",
           "Roku stick", "desktop PC"]
AMOUNTS = ["$12.50", "$18", "$24.99", "$39", "$59", "$7.80", "$31", "$45"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
ROOMS = ["upstairs bedroom", "home office", "back garden room", "basement", "kitchen", "loft", "garage office"]

GREETINGS = ["", "", "", "", "", "", "Hi, ", "Hello, ", "Hi there. ", "Good morning. ", "Hey, ", "Hello Brightwave, "]
USER_TAILS = ["", "", "", "", " Thanks.", " Thanks in advance!", " Any ideas?", " Please help.",
              " This is really frustrating.", " Appreciate it."]
OPENERS = {
    "sorry": ["I'm sorry about that.", "Sorry for the trouble.", "I'm sorry, that's annoying.",
              "Sorry you've had to deal with this."],
    "happy": ["Happy to help.", "Good question.", "Glad you asked.", "Sure thing."],
}

# Each intent: user phrasings and answer templates with {slots}. "kind" picks the opener mood.
INTENTS: list[dict] = [
    # ---------------- billing
    {"topic": "billing", "kind": "sorry",
     "q": ["I was charged twice this month, {amount} both times. Can you fix it?",
           "My bank shows two Brightwave payments of {amount} in {month}.",
           "Why did you take {amount} from my account twice?"],
     "a": [("A double payment usually happens when a card payment is retried after a timeout. I've flagged "
           "the duplicate {amount} charge for a refund; it goes back to the same card within 3 to 5 working "
           "days. You'll see a confirmation email today, and nothing else changes on your account.")]},
    {"topic": "billing", "kind": "happy",
     "q": ["My bill is higher than usual this month. Why?",
           "Why is my {month} bill {amount} more than normal?",
           "The bill went up and I didn't change anything."],
     "a": [("The most common reasons are the end of a promotional discount, a one-off charge such as a "
           "technician visit, or a part-month charge after a plan change. Open Billing in the My Brightwave "
           "app and tap the bill for a line-by-line breakdown. If a line looks wrong, reply here with the bill "
           "date and I'll check it for you."),
           ("Bills usually rise because a promotional discount has ended or a one-off charge was added. The line "
           "items are under Billing in the My Brightwave app.")]},
    {"topic": "billing", "kind": "happy",
     "q": ["How do I change the card I pay with?", "I have a new debit card. How do I update it?",
           "Can I switch from card payments to direct debit?"],
     "a": [("In the My Brightwave app, go to Billing > Payment method > Change, enter the new details and "
           "tap Save. The next bill will use them automatically; the old card is removed the same day."),
           ("Open Billing > Payment method in the My Brightwave app and choose Change. Both card and direct "
           "debit are supported, and the switch takes effect from your next bill.")]},
    {"topic": "billing", "kind": "happy",
     "q": ["Can I move my payment date to the {day} after payday?", "Can I change when my bill is due?",
           "Is it possible to pay on the 15th instead of the 1st?"],
     "a": [("Yes. You can pick any date from the 1st to the 28th under Billing > Payment date. The first bill "
           "after the change may be slightly higher or lower to cover the days in between.")]},
    {"topic": "billing", "kind": "happy",
     "q": ["How do I get paper bills instead of email?", "I want paperless billing.",
           "Can I stop getting bills in the post?"],
     "a": [("Go to Billing > Bill delivery in the My Brightwave app and choose paper or email. Paper bills cost "
           "nothing extra and start with the next billing cycle.")]},
    {"topic": "billing", "kind": "sorry",
     "q": ["I missed a payment. Will my internet be cut off?", "My payment of {amount} failed. What happens now?",
           "I can't pay this month's bill until the {day} after next. Is that OK?"],
     "a": [("Your service stays on. We retry a failed payment after 5 days and send a reminder first. If you "
           "need more time, set up a payment arrangement under Billing > Payment help and choose a date that "
           "works for you; there is no fee for doing that."),
           ("Don't worry, nothing is cut off straight away. You can pay the balance any time in the app, or set "
           "up a free payment arrangement under Billing > Payment help so we know when to expect it.")]},
    # ---------------- outages
    {"topic": "outage", "kind": "sorry",
     "q": ["Is there an outage in {city}? My internet has been down since this morning.",
           "Internet down in {city}. Is it just me?", "Nothing is working, the light on my router is red."],
     "a": [("Let's find out quickly:\n1. Check the service status page in the My Brightwave app; enter your "
           "postcode to see any known outage in {city}.\n2. If there's no outage, restart the router: unplug it "
           "for 30 seconds, plug it back in and wait 3 minutes.\n3. If the light is still red, the line itself "
           "may be faulty; run the line test under Help > Diagnose and we'll book a technician if needed."),
           ("There's a status page in the My Brightwave app that shows live outages by postcode. If {city} isn't "
           "listed, restart your router for 30 seconds and run Help > Diagnose; that tells us whether the line "
           "is at fault.")]},
    {"topic": "outage", "kind": "sorry",
     "q": ["My connection keeps dropping every few minutes.", "The internet cuts out several times an evening.",
           "My Wi-Fi disconnects randomly on my {device}."],
     "a": [("Short drops are often caused by an overheating router or Wi-Fi interference. Make sure the router "
           "stands upright in an open spot, not in a cupboard, and run Help > Diagnose in the app: it records "
           "the drops for 24 hours. If the log shows the line dropping, we'll send a technician at no cost."),
           ("Try this first:\n1. Move the router out of any cabinet and away from the microwave.\n2. Restart it.\n"
           "3. Run Help > Diagnose in the My Brightwave app and leave it running for a day.\nThe report tells us "
           "whether the drops come from the line or the Wi-Fi, and we'll take it from there.")]},
    {"topic": "outage", "kind": "sorry",
     "q": ["We had no internet for two days in {month}. Do I get money back?",
           "Will I be compensated for the outage in {city} last week?"],
     "a": [("Yes. For any outage longer than 24 hours you get a credit for each full day without service, added "
           "to your next bill automatically. If it doesn't appear within one billing cycle, reply here and I'll "
           "apply it by hand.")]},
    # ---------------- router setup
    {"topic": "router", "kind": "happy",
     "q": ["I just got my {router}. How do I set it up?", "How do I install the new router?",
           "The {router} arrived today. What do I plug in where?"],
     "a": [("Setting up the {router} takes about 10 minutes:\n1. Connect the grey cable from the wall socket to "
           "the port marked WAN.\n2. Plug in the power and wait for the light to turn solid white (up to 5 "
           "minutes).\n3. Join the Wi-Fi network printed on the sticker underneath, using the password on the "
           "same sticker.\n4. Open the My Brightwave app and follow Setup to activate the router.\nIf the light "
           "turns red at step 2, check that the grey cable clicks into place.")]},
    {"topic": "router", "kind": "happy",
     "q": ["How do I change my Wi-Fi password?", "I want a new Wi-Fi password, my neighbours know the old one.",
           "How can I change the Wi-Fi name and password on the {router}?"],
     "a": [("In the My Brightwave app, go to Wi-Fi > Settings, edit the name or password and tap Save. Every "
           "device will disconnect and need the new password, so update your {device} and others afterwards."),
           ("Open the My Brightwave app, tap Wi-Fi > Settings and change the password there. Use at least 12 "
           "characters. Devices connected with the old password will drop off and ask for the new one.")]},
    {"topic": "router", "kind": "happy",
     "q": ["The Wi-Fi doesn't reach my {room}.", "No signal in the {room}. Do you sell extenders?",
           "How do I get better Wi-Fi in the {room}?"],
     "a": [("For a weak signal in the {room}, first move the router to a central, raised spot. If that isn't "
           "enough, a Brightwave Mesh Point ($5 a month, or free on Gig 1000 and above) joins the same network "
           "and extends it. You can add one under Shop > Mesh in the app and it arrives in 2 working days."),
           ("A Brightwave Mesh Point is the easiest fix: plug it in halfway between the router and the {room}, "
           "then press Add device in the app. It costs $5 a month and is included with Gig 1000 and Ultra 2000.")]},
    {"topic": "router", "kind": "happy",
     "q": ["How do I set up port forwarding for my {device}?", "I need to open ports for a game server.",
           "Can I forward port 25565 on the {router}?"],
     "a": [("Go to Wi-Fi > Advanced > Port forwarding in the My Brightwave app, choose the {device} from the "
           "device list, enter the port number and the protocol (TCP, UDP or both), then tap Save. The rule "
           "works at once; no restart is needed.")]},
    {"topic": "router", "kind": "happy",
     "q": ["Can I use my own router instead of yours?", "Is it OK to use a third-party router?"],
     "a": [("Yes. Put the {router} in bridge mode under Wi-Fi > Advanced > Bridge mode, then connect your own "
           "router to its LAN port 1. We can't support settings on third-party equipment, but the line and the "
           "{router} stay covered.")]},
    # ---------------- moving house
    {"topic": "moving", "kind": "happy",
     "q": ["I'm moving to {city} next month. Can I take my internet with me?",
           "We're moving house on the {day} after next. What do I need to do?",
           "How do I transfer my Brightwave service to a new address?"],
     "a": [("Congratulations on the move! Start a home move in the My Brightwave app under Account > Moving "
           "home at least 14 days before the date. We'll check the new address in {city}, keep your plan and "
           "price, and switch the service on the day you move. Bring the router with you."),
           ("Moving is free with Brightwave:\n1. Open Account > Moving home in the app.\n2. Enter the new address "
           "and your moving date.\n3. We confirm availability and book any work needed.\nYour plan, price and "
           "contract stay the same. Give us at least 14 days' notice so there's no gap in service.")]},
    {"topic": "moving", "kind": "happy",
     "q": ["Is Brightwave available at my new place in {city}?", "Can you check coverage for an address?"],
     "a": [("You can check any address under Account > Moving home > Check address in the app; it shows which "
           "plans are available there. Most of {city} has Gig 1000, and some streets have Ultra 2000.")]},
    {"topic": "moving", "kind": "sorry",
     "q": ["I'm moving somewhere you don't cover. Do I have to pay a fee to leave?",
           "Brightwave isn't available at my new address. What now?"],
     "a": [("If we can't serve your new address, you can leave without an early termination fee. Start a home "
           "move in the app; when the check shows no coverage, it offers a fee-free cancellation. You only need "
           "to return the router in the prepaid bag we send.")]},
    # ---------------- cancellations
    {"topic": "cancel", "kind": "sorry",
     "q": ["I want to cancel my service.", "How do I cancel Brightwave?", "Please cancel my account."],
     "a": [("I'm sorry to see you go. You can cancel under Account > Cancel service in the app, or call "
           "1-800-555-0142. Cancellation needs 30 days' notice; if you're within your minimum term, the app "
           "shows any early termination fee before you confirm. We'll send a prepaid bag for the router."),
           ("You can cancel under Account > Cancel service in the My Brightwave app; it shows the last day of "
           "service and any fee before you confirm. If something isn't working for you, tell me what it is; "
           "there may be a fix or a better plan.")]},
    {"topic": "cancel", "kind": "happy",
     "q": ["How much is the early termination fee?", "What does it cost to leave before my contract ends?"],
     "a": [("The early termination fee is the monthly price times the months left on the minimum term, minus "
           "20 percent. The exact figure is shown in the app under Account > Contract.")]},
    {"topic": "cancel", "kind": "happy",
     "q": ["How do I return the router after cancelling?", "Where do I send back the {router}?"],
     "a": [("We post a prepaid returns bag within 3 days of cancelling. Put the {router} and its power supply in "
           "the bag and drop it at any post office within 30 days. You'll get an email once it arrives.")]},
    # ---------------- speed
    {"topic": "speed", "kind": "sorry",
     "q": ["I pay for {plan} but only get {speed_low} on a speed test.",
           "My internet is really slow on my {device}.", "Speeds are terrible in the evening."],
     "a": [("Let's narrow it down:\n1. Run a speed test with a device plugged into the router by cable. Wi-Fi "
           "speeds are often far below the line speed.\n2. If the cabled result is close to your plan ({plan}), "
           "the line is fine and we can improve the Wi-Fi.\n3. If the cabled result is low too, run Help > "
           "Diagnose in the app and we'll check the line from our side.\nEvening slowdowns on Wi-Fi are often "
           "neighbours' networks; switching the router to the 5 GHz band helps."),
           ("Wi-Fi speed tests on a {device} rarely show the full line speed. Please test with a cable to the "
           "router; if that's also slow, run Help > Diagnose and we'll look at the line.")]},
    {"topic": "speed", "kind": "happy",
     "q": ["Which plan do I need for 4K streaming and working from home?",
           "Is {plan} enough for a family of four?", "What speed do I need for gaming?"],
     "a": [("For a busy home with several 4K streams and video calls, Plus 500 is plenty. Gig 1000 helps if you "
           "regularly download large files. For gaming, a stable connection matters more than speed; use a "
           "cable for your console where you can."),
           ("As a rule of thumb, allow 25 Mbps per 4K stream and 5 Mbps per video call. Most families of four "
           "are comfortable on Plus 500.")]},
    {"topic": "speed", "kind": "happy",
     "q": ["How do I upgrade to {plan}?", "Can I move up to a faster plan?",
           "What does it cost to upgrade to {plan}?"],
     "a": [("{plan} is {plan_speed} for {plan_price} a month. Upgrade under Account > Plan in the app: the "
           "change is live within an hour, it doesn't restart your contract, and the first bill is adjusted for "
           "the part month.")]},
    # ---------------- technician and account
    {"topic": "technician", "kind": "happy",
     "q": ["I need to move my technician appointment to {day}.", "Can I reschedule the engineer visit?",
           "What time will the technician arrive on {day}?"],
     "a": [("You can move or check the appointment under Account > Appointments in the app. Visits are in a "
           "morning (8am to 12pm) or afternoon (12pm to 5pm) slot, and the technician sends a text 30 minutes "
           "before arriving.")]},
    {"topic": "account", "kind": "happy",
     "q": ["I forgot my password for the app.", "I can't log in to My Brightwave.",
           "How do I reset my account password?"],
     "a": [("Tap Forgot password on the login screen and enter the email on your account. The reset link is "
           "valid for 30 minutes; check your spam folder if it doesn't arrive within 5 minutes.")]},
    {"topic": "account", "kind": "happy",
     "q": ["Can my partner manage the account too?", "How do I add someone to my account?"],
     "a": [("Yes. Go to Account > People and tap Add person. They can view bills and report faults; only the "
           "account holder can change the plan or cancel.")]},
    {"topic": "account", "kind": "happy",
     "q": ["How do I set up parental controls?", "Can I block websites for my kids' {device}?",
           "Can I turn off the Wi-Fi for the children at bedtime?"],
     "a": [("Open Wi-Fi > Family in the My Brightwave app. You can group the children's devices, filter adult "
           "content and set a bedtime schedule that pauses their Wi-Fi, for example from 9pm to 7am.")]},
    {"topic": "account", "kind": "happy",
     "q": ["Do you offer a static IP address?", "Can I get a fixed IP for my home server?"],
     "a": [("A static IP is available as an add-on for $5 a month under Account > Add-ons. It's assigned within "
           "24 hours, and the address is shown on the same screen.")]},
]

# Follow-ups that turn some rows into two-turn conversations: generic ones fit any topic.
FOLLOW_UPS = {
    "any": [("Great, that worked. Thanks!", "Glad to hear it's sorted. Enjoy the rest of your day!"),
            ("Perfect, thank you.", "You're welcome. If anything else comes up, just message us here."),
            ("Can I do it by phone instead?", ("Of course. Call 1-800-555-0142, 8am to 8pm every day, and the "
             "team can do it for you."))],
    "billing": [("Will this change my contract?", "No. Your contract end date and price stay exactly the same.")],
    "moving": [("Does the price change at the new address?", ("No. You keep your current plan and price; only "
                "plans not available at the new address would need a change, and we'd ask you first."))],
    "speed": [("Does upgrading restart my contract?", "No. Upgrades never restart your minimum term.")],
    "outage": [("How will I know when it's fixed?", ("You'll get a text as soon as the fault is cleared, and the "
                "status page updates at the same time."))],
}
NO_OPENER = ("I'm", "Yes", "Congratulations", "Let's", "Don't", "Sorry", "Of course", "Moving", "Setting")
CALM_TAILS = [t for t in USER_TAILS if "frustrating" not in t]

SPEEDS_LOW = ["12 Mbps", "40 Mbps", "85 Mbps", "150 Mbps", "210 Mbps"]


def _fill(template: str, slots: dict) -> str:
    return template.format(**slots)


def _support_rows(rng: random.Random, target: int = 300) -> list[dict]:
    rows, seen = [], set()
    attempts = 0
    while len(rows) < target and attempts < target * 50:
        attempts += 1
        intent = rng.choice(INTENTS)
        plan = rng.choice(list(PLANS))
        slots = {"amount": rng.choice(AMOUNTS), "month": rng.choice(MONTHS), "day": rng.choice(DAYS),
                 "city": rng.choice(CITIES), "router": rng.choice(ROUTERS), "device": rng.choice(DEVICES),
                 "room": rng.choice(ROOMS), "plan": plan, "plan_speed": PLANS[plan][0],
                 "plan_price": PLANS[plan][1], "speed_low": rng.choice(SPEEDS_LOW)}
        greeting, ask = rng.choice(GREETINGS), _fill(rng.choice(intent["q"]), slots)
        if greeting.endswith(", ") and not ask.startswith(("I ", "I'", "Brightwave", "Wi-Fi")):
            ask = ask[0].lower() + ask[1:]  # "Hi, how do I..." reads as one sentence
        question = greeting + ask + rng.choice(
            USER_TAILS if intent["kind"] == "sorry" else CALM_TAILS)
        if question in seen:
            continue
        seen.add(question)
        body = _fill(rng.choice(intent["a"]), slots)
        use_opener = rng.random() < 0.6 and not body.startswith(NO_OPENER)
        opener = rng.choice(OPENERS[intent["kind"]]) + " " if use_opener else ""
        answer = f"{opener}{body}\n\n{SIGN_OFF}"
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question},
                    {"role": "assistant", "content": answer}]
        if rng.random() < 0.1:
            follow, reply = rng.choice(FOLLOW_UPS["any"] + FOLLOW_UPS.get(intent["topic"], []))
            messages += [{"role": "user", "content": follow},
                         {"role": "assistant", "content": f"{reply}\n\n{SIGN_OFF}"}]
        rows.append({"messages": messages})
    return rows


def write_support(path: Path = HERE / "customer_support.jsonl") -> None:
    rows = _support_rows(random.Random(7))
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {path.name}: {len(rows)} rows, {path.stat().st_size / 1024:.0f} KB")



# --- legal_clauses.csv (Alpaca: instruction, input, output) ----------------------------------
PARTIES = [("Northwind Logistics Ltd", "Harbor Analytics Inc"), ("Greenleaf Properties LLC", "Maria Santos"),
           ("Atlas Software GmbH", "Pinecrest Dental Group"), ("Bluefin Media Ltd", "Orchard Foods plc"),
           ("Summit Staffing LLC", "Kestrel Engineering Ltd"), ("Redwood Clinics Inc", "DataHarbor Cloud Ltd")]
LAWS = ["England and Wales", "the State of New York", "Ontario", "the State of California", "Ireland"]

# Each clause: text template, its category, a plain-English explanation, a one-line summary and a risk note.
CLAUSES = [
    {"cat": "Confidentiality",
     "text": "Each party shall keep confidential all Confidential Information disclosed by the other party and "
             "shall not disclose it to any third party without prior written consent, save as required by law. "
             "This obligation survives termination of this Agreement for {years} years.",
     "explain": "Both sides must keep the other's private information secret and may only share it with "
                "written permission or when the law requires it. The duty continues for {years} years after the "
                "contract ends.",
     "summary": "Both parties must keep each other's confidential information secret for {years} years after "
                "the contract ends.",
     "risk": "The main risk is an accidental disclosure after the contract ends: the duty lasts {years} more "
             "years, so staff who leave the project still need to know about it."},
    {"cat": "Termination for convenience",
     "text": "Either party may terminate this Agreement at any time for any reason by giving not less than {days} "
             "days' written notice to the other party.",
     "explain": "Either side can end the contract without giving a reason, as long as it warns the other in "
                "writing at least {days} days beforehand.",
     "summary": "Either party can end the contract for any reason with {days} days' written notice.",
     "risk": "Neither side has long-term certainty: the work can stop after {days} days even if everything is "
             "going well, so plan staffing and spending accordingly."},
    {"cat": "Termination for breach",
     "text": "{a} may terminate this Agreement with immediate effect by written notice if {b} commits a material "
             "breach and, where the breach is capable of remedy, fails to remedy it within {days} days of being "
             "notified in writing.",
     "explain": "If {b} seriously breaks the contract, {a} can end it at once by written notice. If the problem "
                "can be fixed, {b} first gets {days} days to fix it after being told in writing.",
     "summary": "{a} may end the contract if {b} seriously breaches it and does not fix the breach within "
                "{days} days.",
     "risk": "The clause is one-sided: only {a} can terminate for breach, so {b} should ask for the same right."},
    {"cat": "Limitation of liability",
     "text": "Save for liability for death or personal injury caused by negligence or for fraud, the total "
             "liability of {a} under or in connection with this Agreement shall not exceed {amount} in any "
             "contract year.",
     "explain": "Apart from injury caused by carelessness, death, or fraud, {a} will never have to pay more "
                "than {amount} a year in total for anything that goes wrong under this contract.",
     "summary": "{a}'s liability is capped at {amount} per year, except for injury, death or fraud.",
     "risk": "{b} carries any loss above {amount} a year; check whether the cap is in line with the contract "
             "value and whether insurance covers the gap."},
    {"cat": "Indemnity",
     "text": "{b} shall indemnify and hold harmless {a} against all losses, claims, damages and expenses "
             "(including reasonable legal fees) arising out of any breach of this Agreement by {b}.",
     "explain": "If {b} breaks the contract and that costs {a} money, including lawyers' fees or claims from "
                "others, {b} must pay {a} back in full.",
     "summary": "{b} must reimburse {a} for all losses caused by {b}'s breach, including legal fees.",
     "risk": "The indemnity is unlimited, so {b}'s exposure has no ceiling; {b} should ask for it to fall under "
             "the liability cap."},
    {"cat": "Payment terms",
     "text": "{b} shall pay each undisputed invoice within {days} days of the date of receipt. Invoices shall be "
             "issued monthly in arrears.",
     "explain": "{a} sends a bill at the end of each month for the work already done, and {b} has {days} days "
                "from receiving it to pay any amount it does not dispute.",
     "summary": "Monthly invoices in arrears, payable within {days} days of receipt.",
     "risk": "For {a}, {days} days is the time its cash is tied up; disputed invoices can be held back, so "
             "clear records of the work matter."},
    {"cat": "Late payment",
     "text": "If {b} fails to pay any amount when due, {a} may charge interest on the overdue amount at {rate} "
             "percent per annum above the base rate, accruing daily from the due date until payment in full.",
     "explain": "If {b} pays late, {a} can add interest of {rate} percent a year above the bank base rate, "
                "counted day by day until the bill is fully paid.",
     "summary": "Late payments carry daily interest at {rate}% a year above the base rate.",
     "risk": "Late payment gets expensive for {b} quickly; it should make sure invoices reach the right "
             "person so nothing is paid late by mistake."},
    {"cat": "Governing law",
     "text": "This Agreement and any dispute arising from it shall be governed by the laws of {law}, and the "
             "parties submit to the exclusive jurisdiction of its courts.",
     "explain": "The contract is read under the law of {law}, and any court case about it must be brought in "
                "the courts there.",
     "summary": "The law of {law} applies and its courts decide any dispute.",
     "risk": "A party based elsewhere would have to litigate in {law}, which adds cost; consider whether "
             "arbitration or a neutral venue suits both sides."},
    {"cat": "Force majeure",
     "text": "Neither party shall be liable for any delay or failure to perform caused by events beyond its "
             "reasonable control, including fire, flood, epidemic, war or failure of public utilities. If such "
             "an event continues for more than {days} days, either party may terminate this Agreement.",
     "explain": "Nobody is to blame for delays caused by events they cannot control, like fires, floods, "
                "epidemics, war or power failures. If such an event lasts more than {days} days, either side "
                "can end the contract.",
     "summary": "Uncontrollable events excuse delays; after {days} days either party may terminate.",
     "risk": "Payment obligations are not clearly excluded, so a party might argue it need not pay during the "
             "event; check whether that is intended."},
    {"cat": "Non-compete",
     "text": "For a period of {months} months after termination, {b} shall not, directly or indirectly, provide "
             "services to any competitor of {a} within {law}.",
     "explain": "For {months} months after the contract ends, {b} may not work for, or help, any competitor of "
                "{a} in {law}.",
     "summary": "{b} may not work for {a}'s competitors in {law} for {months} months after the contract ends.",
     "risk": "Courts often refuse to enforce restrictions that are too wide; {months} months and a whole "
             "jurisdiction may be challenged, but {b} should not rely on that."},
    {"cat": "Non-solicitation",
     "text": "During the term and for {months} months thereafter, neither party shall solicit or entice away any "
             "employee of the other party who was involved in the performance of this Agreement.",
     "explain": "While the contract runs and for {months} months after, neither side may try to hire away the "
                "other side's staff who worked on this contract.",
     "summary": "Neither party may poach the other's project staff during the contract and for {months} months "
                "after.",
     "risk": "Recruiters and managers on both sides need to know about the restriction, or a routine hire could "
             "breach it."},
    {"cat": "Intellectual property",
     "text": "All intellectual property rights in the Deliverables shall vest in {a} upon creation, and {b} "
             "hereby assigns to {a} all such rights with full title guarantee.",
     "explain": "Everything {b} creates for this contract belongs to {a} from the moment it is made; {b} "
                "transfers all rights to it and promises it has the right to do so.",
     "summary": "{a} owns all intellectual property in the deliverables as soon as they are created.",
     "risk": "{b} loses the right to reuse its own work, including general tools it builds along the way, "
             "unless those are carved out."},
    {"cat": "Automatic renewal",
     "text": "This Agreement shall renew automatically for successive periods of {months} months unless either "
             "party gives written notice of non-renewal at least {days} days before the end of the then-current "
             "term.",
     "explain": "The contract extends itself by {months} months each time it ends, unless one side says in "
                "writing at least {days} days before the end that it does not want to continue.",
     "summary": "The contract auto-renews for {months}-month periods unless cancelled {days} days before the end.",
     "risk": "Missing the {days}-day notice window locks you in for another {months} months; put the date in "
             "a calendar."},
    {"cat": "Warranty disclaimer",
     "text": "Except as expressly set out in this Agreement, the Services are provided \"as is\" and {a} makes "
             "no warranties, express or implied, including any warranty of merchantability or fitness for a "
             "particular purpose.",
     "explain": "{a} promises nothing about the services beyond what the contract says in so many words; it "
                "does not guarantee they will be of good quality or suit {b}'s purpose.",
     "summary": "The services come \"as is\" with no warranties beyond those written in the contract.",
     "risk": "{b} has little recourse if the services disappoint, so the promises it relies on should be "
             "written into the contract itself."},
    {"cat": "Security deposit",
     "text": "The Tenant shall pay a deposit of {amount} on signing. The Landlord shall return the deposit within "
             "{days} days after the end of the tenancy, less any reasonable deductions for damage beyond fair "
             "wear and tear.",
     "explain": "The tenant pays {amount} up front. After moving out, the landlord gives it back within {days} "
                "days, but may keep money for damage beyond normal wear and tear.",
     "summary": "A {amount} deposit is returned within {days} days of the tenancy ending, minus damage costs.",
     "risk": "Disputes are about what counts as fair wear and tear; the tenant should take dated photos at "
             "move-in and move-out."},
    {"cat": "Assignment",
     "text": "{b} shall not assign, transfer or subcontract any of its rights or obligations under this "
             "Agreement without the prior written consent of {a}.",
     "explain": "{b} cannot pass the contract, or any part of the work, to someone else without {a}'s written "
                "permission.",
     "summary": "{b} needs {a}'s written consent to assign or subcontract the contract.",
     "risk": "{b} cannot use subcontractors freely, and a sale of {b}'s business could need {a}'s consent."},
    {"cat": "Data protection",
     "text": "{b} shall process personal data only on the documented instructions of {a}, implement appropriate "
             "technical and organisational measures, and notify {a} of any personal data breach within {hours} "
             "hours of becoming aware of it.",
     "explain": "{b} may only use personal data the way {a} tells it to in writing, must keep it properly "
                "secure, and must tell {a} about any data breach within {hours} hours of finding out.",
     "summary": "{b} processes personal data only on {a}'s instructions and reports breaches within {hours} hours.",
     "risk": "{hours} hours is a tight deadline; {b} needs an incident process that reaches the right people "
             "quickly, including at weekends."},
]
DEFINITION_Q = [
    ("What is a force majeure clause?", ("A force majeure clause excuses a party from performing its obligations "
     "when an event beyond its control, such as a natural disaster, war or epidemic, prevents it. It usually "
     "says which events count, what notice must be given, and when the contract can be ended if the event lasts.")),
    ("What does \"indemnify\" mean in a contract?", ("To indemnify means to promise to cover another party's "
     "losses. If a party indemnifies you against a claim, it must pay back what the claim costs you, often "
     "including legal fees.")),
    ("What is the difference between a warranty and an indemnity?", ("A warranty is a promise that something is "
     "true; if it is broken you can claim damages but must prove your loss. An indemnity is a promise to pay "
     "for specified losses pound for pound, which is usually easier to enforce.")),
    ("What is a limitation of liability clause?", ("It caps how much one party can be made to pay if things go "
     "wrong, often at a fixed sum or the fees paid. Liability for death, injury caused by negligence and fraud "
     "usually cannot be limited.")),
    ("What does \"material breach\" mean?", ("A material breach is a serious failure to perform a contract, one "
     "that goes to the heart of the deal. It usually gives the other party the right to terminate, while a "
     "minor breach only gives a right to damages.")),
    ("What is an entire agreement clause?", ("It states that the written contract is the whole deal, so earlier "
     "emails, conversations and drafts do not add to it. If something matters to you, it needs to be in the "
     "signed document.")),
    ("What is a severability clause for?", ("It keeps the rest of the contract valid if a court strikes out one "
     "part. Without it, an invalid clause could put the whole agreement in doubt.")),
    ("What does \"time is of the essence\" mean?", ("It makes deadlines in the contract essential terms, so missing "
     "one is a serious breach that can justify ending the contract, not just a claim for delay.")),
]
LEGAL_INSTRUCTIONS = {
    "explain": ["Explain this contract clause in plain English.", ("Rewrite this clause so a non-lawyer can "
                "understand it."), "What does this clause mean?"],
    "summary": ["Summarise this clause in one sentence.", "Give a one-line summary of the following clause."],
    "classify": ["Classify this clause by type.", "What kind of clause is this?"],
    "risk": ["What should I watch out for in this clause?", "Identify the main risk in this clause.",
             "Point out the risk in this clause for the weaker party."],
}


def _legal_rows(rng: random.Random, target: int = 150) -> list[dict]:
    rows, seen = [], set()
    for question, answer in DEFINITION_Q:
        rows.append({"instruction": question, "input": "", "output": answer})
    while len(rows) < target:
        clause = rng.choice(CLAUSES)
        a, b = rng.choice(PARTIES)
        slots = {"a": a, "b": b, "days": rng.choice([10, 14, 30, 45, 60, 90]), "months": rng.choice([6, 12, 24]),
                 "years": rng.choice([2, 3, 5]), "amount": rng.choice(["$50,000", "£25,000", "$250,000",
                                                                      "€100,000", "£1,800", "$2,400"]),
                 "rate": rng.choice([3, 4, 8]), "law": rng.choice(LAWS), "hours": rng.choice([24, 48, 72])}
        task = rng.choice(list(LEGAL_INSTRUCTIONS))
        text = clause["text"].format(**slots)
        if (task, text) in seen:
            continue
        seen.add((task, text))
        if task == "classify":
            output = f"{clause['cat']} clause. {clause['summary'].format(**slots)}"
        else:
            output = clause[task].format(**slots)
        rows.append({"instruction": rng.choice(LEGAL_INSTRUCTIONS[task]), "input": text, "output": output})
    rng.shuffle(rows)
    return rows


def write_legal(path: Path = HERE / "legal_clauses.csv") -> None:
    rows = _legal_rows(random.Random(11))
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["instruction", "input", "output"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path.name}: {len(rows)} rows, {path.stat().st_size / 1024:.0f} KB")


# --- recipes_sharegpt.json (ShareGPT conversations) -------------------------------------------
RECIPES = {
    "shakshuka": (["4 eggs", "1 tin chopped tomatoes", "1 red pepper", "1 onion", "2 garlic cloves",
                   "1 tsp cumin", "1 tsp smoked paprika", "feta and parsley to serve"],
                  ["Soften the sliced onion and pepper in olive oil for 8 minutes.",
                   "Add garlic, cumin and paprika and cook for 1 minute.",
                   "Pour in the tomatoes and simmer for 10 minutes until thick; season well.",
                   "Make 4 hollows, crack in the eggs, cover and cook for 6 to 8 minutes until the whites set.",
                   "Scatter with feta and parsley and serve with bread."], 25, "vegetarian"),
    "lentil soup": (["200 g red lentils", "1 onion", "2 carrots", "1 litre vegetable stock", "1 tsp cumin",
                     "juice of half a lemon"],
                    ["Fry the chopped onion and carrots for 5 minutes.", "Stir in the cumin, then the lentils.",
                     "Add the stock and simmer for 20 minutes until the lentils collapse.",
                     "Blend until smooth, add the lemon juice and season."], 35, "vegan"),
    "chicken stir-fry": (["2 chicken breasts", "1 head broccoli", "1 red pepper", "2 tbsp soy sauce",
                          "1 tbsp honey", "thumb of ginger", "2 garlic cloves", "noodles or rice"],
                         ["Slice the chicken thinly and stir-fry in a very hot wok for 4 minutes; set aside.",
                          "Stir-fry the broccoli and pepper for 3 minutes with a splash of water.",
                          "Add ginger and garlic for 30 seconds, then the chicken, soy sauce and honey.",
                          "Toss for 1 minute until glossy and serve over noodles or rice."], 20, "dairy-free"),
    "banana bread": (["3 ripe bananas", "75 g melted butter", "150 g sugar", "1 egg", "1 tsp baking soda",
                      "190 g plain flour", "pinch of salt"],
                     ["Heat the oven to 175°C and line a loaf tin.", "Mash the bananas and mix in the butter.",
                      "Stir in the sugar, egg, baking soda and salt, then fold in the flour.",
                      "Bake for 55 to 60 minutes until a skewer comes out clean; cool before slicing."], 70,
                     "vegetarian"),
    "mushroom risotto": (["300 g arborio rice", "250 g mushrooms", "1 onion", "1 litre hot stock",
                          "100 ml white wine", "40 g parmesan", "knob of butter"],
                         ["Fry the mushrooms until golden; set aside.", ("Soften the onion, then toast the rice "
                          "for 1 minute."), "Add the wine and let it bubble away.",
                          "Add the stock a ladle at a time, stirring, for about 18 minutes.",
                          "Stir in the mushrooms, parmesan and butter; rest for 2 minutes."], 40, "vegetarian"),
    "chickpea curry": (["2 tins chickpeas", "1 tin coconut milk", "1 onion", "2 tbsp curry paste",
                        "200 g spinach", "1 tin chopped tomatoes"],
                       ["Soften the onion, then fry the curry paste for 1 minute.",
                        "Add tomatoes, coconut milk and drained chickpeas; simmer for 15 minutes.",
                        "Stir in the spinach until wilted and season with salt and lime."], 30, "vegan"),
    "pancakes": (["200 g flour", "2 eggs", "300 ml milk", "1 tbsp sugar", "2 tsp baking powder", "butter"],
                 ["Whisk the flour, sugar and baking powder.", "Beat in the eggs and milk to a thick batter.",
                  "Cook ladlefuls in a buttered pan over medium heat until bubbles appear, then flip.",
                  "Serve with fruit and maple syrup."], 20, "vegetarian"),
    "baked salmon": (["2 salmon fillets", "1 lemon", "2 tbsp olive oil", "1 garlic clove", "fresh dill"],
                     ["Heat the oven to 200°C.", "Put the salmon on a lined tray with oil, garlic and lemon slices.",
                      "Bake for 12 to 15 minutes until it flakes easily.", ("Finish with dill and a squeeze of "
                      "lemon.")], 20, "gluten-free"),
    "guacamole": (["2 ripe avocados", "1 lime", "half a red onion", "1 tomato", "handful of coriander",
                   "1 small chilli"],
                  ["Mash the avocados with the lime juice.", ("Stir in the finely chopped onion, tomato, chilli "
                   "and coriander."), "Season with salt and serve straight away."], 10, "vegan"),
    "tomato pasta": (["300 g spaghetti", "1 tin chopped tomatoes", "3 garlic cloves", "pinch of chilli flakes",
                      "basil", "parmesan"],
                     ["Cook the pasta in well-salted water.", "Gently fry sliced garlic and chilli in olive oil.",
                      "Add the tomatoes and simmer for 10 minutes.",
                      ("Toss the pasta with the sauce and a splash of pasta water; finish with basil and "
                      "parmesan.")], 20, "vegetarian"),
    "beef chilli": (["500 g beef mince", "1 onion", "2 tins tomatoes", "1 tin kidney beans", "2 tsp chilli powder",
                     "1 tsp cumin", "1 tsp cocoa powder"],
                    ["Brown the mince in batches; set aside.", "Soften the onion, add the spices for 1 minute.",
                     "Return the beef with tomatoes and cocoa; simmer for 45 minutes.",
                     "Add the beans for the last 10 minutes and season."], 70, "gluten-free"),
    "overnight oats": (["50 g rolled oats", "120 ml milk", "3 tbsp yoghurt", "1 tsp honey", "berries"],
                       ["Mix the oats, milk, yoghurt and honey in a jar.", "Cover and chill overnight.",
                        "Top with berries in the morning."], 5, "vegetarian"),
}
SUBSTITUTES = {
    "eggs": "For each egg, use 1 tablespoon of ground flaxseed mixed with 3 tablespoons of water and left for "
            "5 minutes; in baking, 60 g of mashed banana also works.",
    "butter": "Use the same weight of a plant-based block butter, or three quarters of the weight in a neutral "
              "oil.",
    "milk": "Any plant milk works one for one; oat milk is closest in richness.",
    "white wine": "Use the same amount of stock with a teaspoon of white wine vinegar or lemon juice.",
    "parmesan": "Aged pecorino works the same way; for a vegan version, 2 tablespoons of nutritional yeast.",
    "coriander": "Flat-leaf parsley with a little lime zest is the best stand-in.",
    "soy sauce": "Tamari is gluten-free and tastes almost the same; coconut aminos are milder and sweeter.",
}
RECIPE_SYSTEM = "You are a friendly home-cooking assistant. Give clear quantities and steps."
RECIPE_ASKS = ["How do I make {dish}?", "Can you give me a simple recipe for {dish}?", ("I'd like to cook {dish} "
               "tonight. What do I need?"), "What's an easy way to make {dish} at home?"]


def _recipe_answer(dish: str) -> str:
    ingredients, steps, minutes, diet = RECIPES[dish]
    lines = [f"Here's an easy recipe for {dish} ({minutes} minutes, {diet}).", "", "Ingredients:"]
    lines += [f"- {item}" for item in ingredients]
    lines += ["", "Method:"] + [f"{i}. {step}" for i, step in enumerate(steps, 1)]
    return "\n".join(lines)


def _recipe_rows(rng: random.Random, target: int = 100) -> list[dict]:
    rows, seen = [], set()
    dishes = list(RECIPES)
    while len(rows) < target:
        dish = rng.choice(dishes)
        kind = rng.choice(["recipe", "recipe", "time", "substitute", "pantry"])
        conv = []
        if rng.random() < 0.3:
            conv.append({"from": "system", "value": RECIPE_SYSTEM})
        if kind == "recipe":
            ask = rng.choice(RECIPE_ASKS).format(dish=dish)
            conv += [{"from": "human", "value": ask}, {"from": "gpt", "value": _recipe_answer(dish)}]
            swaps = [s for s in SUBSTITUTES if any(s in item for item in RECIPES[dish][0])]
            if swaps and rng.random() < 0.5:
                swap = rng.choice(swaps)
                conv += [{"from": "human", "value": f"I don't have {swap}. What can I use instead?"},
                         {"from": "gpt", "value": SUBSTITUTES[swap]}]
        elif kind == "time":
            minutes = RECIPES[dish][2]
            conv += [{"from": "human", "value": f"How long does {dish} take from start to finish?"},
                     {"from": "gpt", "value": f"About {minutes} minutes in total, including preparation. "
                      f"{RECIPES[dish][1][-1]}"}]
        elif kind == "substitute":
            swap = rng.choice(list(SUBSTITUTES))
            conv += [{"from": "human", "value": f"What's a good substitute for {swap} in cooking?"},
                     {"from": "gpt", "value": SUBSTITUTES[swap]}]
        else:
            have = rng.sample(RECIPES[dish][0], k=min(3, len(RECIPES[dish][0])))
            conv += [{"from": "human", "value": f"I have {', '.join(have[:-1])} and {have[-1]}. What can I cook?"},
                     {"from": "gpt", "value": f"You could make {dish}. {_recipe_answer(dish)}"}]
        key = json.dumps(conv)
        if key in seen:
            continue
        seen.add(key)
        rows.append({"conversations": conv})
    return rows


def write_recipes(path: Path = HERE / "recipes_sharegpt.json") -> None:
    rows = _recipe_rows(random.Random(5))
    path.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path.name}: {len(rows)} rows, {path.stat().st_size / 1024:.0f} KB")


# --- product_notes.txt (plain text, one note per paragraph) ------------------------------------
PRODUCTS = [
    ("Lumen Arc desk lamp", "lamp", "an aluminium arm, a 2700K to 6500K colour range and a USB-C port in the base"),
    ("Tessel wool throw", "throw", "merino wool woven in a herringbone pattern, 130 by 170 cm"),
    ("Halden pour-over kettle", "kettle", "a gooseneck spout, a 0.9 litre capacity and temperature hold"),
    ("Corvid backpack", "backpack", ("a 24 litre main compartment, a padded 16-inch laptop sleeve and recycled "
     "nylon shell")),
    ("Mira ceramic planter", "planter", "a drainage hole with a cork plug and a matte glaze in five colours"),
    ("Strata standing desk", "desk", "dual motors, four height presets and a 140 by 70 cm bamboo top"),
    ("Wren wireless speaker", "speaker", "a 12-hour battery, IP67 water resistance and a fabric cover"),
    ("Fjell rain jacket", "jacket", "a waterproof 3-layer shell, taped seams and a packable hood"),
]
NOTE_TEMPLATES = [
    ("The {name} comes with {features}. Customers mention it most often for everyday use at home, and the "
    "return rate is below 2 percent."),
    "Care note for the {name}: {care}. Do not use abrasive cleaners, and keep it away from direct heat.",
    ("Shipping note: the {name} ships in plastic-free packaging from our warehouse within 2 working days. "
    "Orders over $60 ship free."),
    ("Warranty: every {kind} we sell, the {name} included, is covered for {years} years against manufacturing "
    "faults. Keep the order email as proof of purchase."),
    ("Frequently asked: is the {name} worth it? Reviewers highlight {features}, and most say it has lasted "
    "longer than the one it replaced."),
]
CARE = {"lamp": "wipe the shade with a dry cloth", "throw": "hand wash cold and dry flat",
        "kettle": "descale monthly with white vinegar", "backpack": "sponge clean with mild soap",
        "planter": "rinse with warm water", "desk": "wipe the top with a damp cloth",
        "speaker": "wipe with a damp cloth and let the port dry before charging",
        "jacket": "wash at 30°C and tumble dry low to refresh the water-repellent coating"}


def write_notes(path: Path = HERE / "product_notes.txt") -> None:
    rng = random.Random(3)
    paragraphs = []
    for name, kind, features in PRODUCTS:
        for template in NOTE_TEMPLATES:
            paragraphs.append(template.format(name=name, kind=kind, features=features, care=CARE[kind],
                                              years=rng.choice([2, 3, 5])))
    rng.shuffle(paragraphs)
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    print(f"wrote {path.name}: {len(paragraphs)} paragraphs, {path.stat().st_size / 1024:.0f} KB")


WRITERS = {"support": write_support, "legal": write_legal, "recipes": write_recipes, "notes": write_notes}


def main(argv: list[str]) -> int:
    names = argv or list(WRITERS)
    for name in names:
        WRITERS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
