"""Prompt-injection and jailbreak screen: a documented, weighted rule set (docs/guard.md).

Each rule is a pattern over a normalised view of the prompt with a weight; a prompt is flagged
when the weights of the distinct rules it matches add up to BLOCK_SCORE. Strong, specific
phrasings ("ignore all previous instructions", "you are DAN", "<|im_start|>system") weigh 1.0
and block alone; weaker hints ("no restrictions", "stay in character", "base64") weigh less
and block only together, which is what keeps ordinary prompts that happen to say "ignore",
"previous" or "system" from being refused.

Normalisation, so that trivial obfuscation does not pass: Unicode NFKC (full-width and
ligature forms), casefolding, common Cyrillic/Greek look-alike letters mapped to Latin,
zero-width characters removed, whitespace collapsed; rules are also matched on leetspeak-folded
views (0->o, 1->i or l, 3->e, 4->a, 5->s, 7->t, @->a, $->s) and on letter-spaced words joined
("i g n o r e" -> "ignore"). Base64 and hex payloads are decoded, and text that mentions rot13
is rotated, and the decoded text is screened too.
"""
from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from dataclasses import dataclass

BLOCK_SCORE = 1.0
CATEGORY_REASONS = {  # one sentence each, returned to the client with the 4xx
    "override": "The prompt asks the model to ignore its instructions.",
    "roleplay": "The prompt tries to switch the model into an unrestricted persona (a known jailbreak).",
    "exfiltration": "The prompt asks the model to reveal its system prompt or hidden instructions.",
    "role_injection": "The prompt contains a fake system or assistant turn or chat-template control tokens.",
    "safety_bypass": "The prompt asks the model to switch off its safety rules.",
    "encoded": "The prompt hides instructions in an encoded payload.",
}
G = r"\W+"                       # gap between words: spaces, punctuation, dashes
W = r"(?:[\w'’]+\W+)"            # one filler word and the gap after it
NOT_MINE = r"(?:(?!my\b|i\b|me\b)[\w'’]+\W+)"  # a filler word other than the user's own "my/I/me"


@dataclass(frozen=True)
class Rule:
    name: str
    category: str
    weight: float
    pattern: re.Pattern


def _rule(name: str, category: str, weight: float, pattern: str) -> Rule:
    return Rule(name, category, weight, re.compile(pattern, re.MULTILINE))


INSTRUCTIONS = (r"(?:instructions?|directives?|prompts?|rules|guidelines|guidance|commands|context|constraints|"
                r"restrictions|programming|orders|polic(?:y|ies)|guardrails|training)")
IGNORE = r"(?:ignore|disregard|forget|overlook|skip|override|bypass|discard|abandon|neglect|set\W+aside|throw\W+out)"

RULES: tuple[Rule, ...] = (
    # override: telling the model to drop what it was told
    _rule("ignore_previous_instructions", "override", 1.0,
          rf"\b{IGNORE}{G}{NOT_MINE}{{0,3}}?(?:all{G})?(?:the{G})?(?:previous|prior|preceding|above|earlier|foregoing|"
          rf"initial|original|former|system|developer|existing|hidden){G}{NOT_MINE}{{0,2}}?{INSTRUCTIONS}\b"),
    _rule("ignore_your_rules", "override", 1.0,
          rf"\b(?:{IGNORE}|break|violate|drop|forget\W+about){G}(?:all{G}|any{G})?(?:of{G})?(?:your|its|the{G}(?:ai|model|"
          rf"assistant|bot)['’]?s?){G}{W}{{0,2}}?(?:{INSTRUCTIONS}|ethics|principles|safety|filters?|system{G}prompt)\b"),
    _rule("ignore_all_instructions", "override", 0.8,
          rf"\b{IGNORE}{G}(?:all|any|every){G}{NOT_MINE}{{0,2}}?{INSTRUCTIONS}\b"),
    _rule("forget_everything", "override", 0.6,
          rf"\b(?:ignore|disregard|forget){G}(?:all{G}|everything{G}|anything{G})?(?:of{G})?(?:the{G})?(?:above|"
          rf"before|that{G}came{G}before|you{G}(?:were|have{G}been){G}(?:told|given|taught))\b"
          rf"|\bforget{G}everything\b"),
    _rule("new_instructions", "override", 0.6,
          rf"\bnew{G}(?:instructions|rules|task|directive|objective|system{G}prompt)\s*:"
          rf"|\byour{G}(?:new|real|true|actual){G}(?:instructions|task|role|purpose|goal|objective|directive)\b"),
    _rule("from_now_on", "override", 0.4, rf"\bfrom{G}now{G}on\W*(?:you|your)\b"),
    _rule("you_are_now", "override", 0.5,
          rf"\byou{G}are{G}(?:now{G}(?:a|an|in|free|going|my)|no{G}longer)\b|\byou['’]re{G}(?:now{G}(?:a|an|free)|no{G}longer)\b"),
    _rule("instead_output", "override", 0.3,
          rf"\b(?:and{G})?instead{G}(?:just{G})?(?:say|print|output|write|respond|reply|tell)\b"),
    _rule("only_output", "override", 0.3,
          rf"\b(?:only|just)\W+(?:say|output|print|respond\W+with|reply\W+with)\b"),
    _rule("pwned", "override", 0.7, r"\b(?:i\W+have\W+been\W+pwned|pwned|hacked\W+by\W+\w+)\b"),
    # roleplay: persona jailbreaks
    _rule("do_anything_now", "roleplay", 1.0,
          rf"\bdo{G}anything{G}now\b|\b(?:you{G}are|act{G}as|pretend{G}to{G}be|become|called|named|as){G}(?:\w+{G}){{0,2}}?dan\b"
          rf"|\bdan{G}(?:mode|prompt|jailbreak)\b|\[\W*dan\W*\]"),
    _rule("jailbreak_mode", "roleplay", 1.0,
          rf"\b(?:god|sudo|unrestricted|jailbreak|jailbroken|chaos|opposite|unfiltered|uncensored|evil|dan){G}mode\b"),
    _rule("developer_mode", "roleplay", 0.5,
          rf"\b(?:developer|dev|debug|admin|maintenance|root){G}mode\b"),
    _rule("unrestricted_persona", "roleplay", 1.0,
          rf"\b(?:you{G}are|you['’]re|act{G}as|acting{G}as|pretend{G}(?:to{G}be|you{G}are|you['’]re)|role\W*play{G}as|play{G}"
          rf"the{G}role{G}of|become|simulate|behave{G}(?:like|as)|respond{G}as|answer{G}as){G}{W}{{0,4}}?(?:unrestricted|"
          rf"unfiltered|uncensored|unbound|unshackled|unlimited|amoral|unethical|jailbroken|limitless|lawless|"
          rf"without{G}(?:any{G})?(?:restrictions|limits|filters|rules|morals|ethics|guidelines|censorship))\b"),
    _rule("no_restrictions", "roleplay", 0.6,
          rf"\b(?:no|without|free{G}(?:of|from)|zero|not{G}bound{G}by|don['’]?t{G}have{G}(?:any)?|never{G}(?:follow|obey)){G}"
          rf"(?:any{G})?{W}{{0,1}}?(?:restrictions|limitations|limits|filters|filtering|censorship|rules|guidelines|"
          rf"morals|morality|ethics|content{G}polic(?:y|ies)|safety{G}(?:rules|guidelines|measures))\b"),
    _rule("stay_in_character", "roleplay", 0.4,
          rf"\bstay{G}in{G}character\b|\bbreak(?:ing)?{G}character\b|\bcharacter{G}break\b"),
    _rule("dual_response", "roleplay", 1.0,
          rf"\b(?:two|2|both)\W+(?:different\W+|separate\W+)?(?:responses|answers|replies|paragraphs|outputs)\b"
          rf".{{0,120}}?(?:jailbr|unfiltered|\bdan\b|developer{G}mode|unrestricted|uncensored)|🔓"),
    _rule("jailbreak_word", "roleplay", 0.5, r"\bjail\W?br(?:ea|o)k\w*"),
    _rule("never_refuse", "roleplay", 0.6,
          rf"\b(?:never|don['’]?t|do{G}not|must{G}not|will{G}not|won['’]t|cannot|can['’]t){G}(?:ever{G})?(?:refuse|"
          rf"decline|reject{G}(?:a|any)|say{G}(?:no\b|that{G}you{G}can)|add{G}(?:any{G})?(?:warnings|disclaimers))"
          rf"|\b(?:always|must|will){G}(?:always{G})?(?:comply|obey)\b"),
    _rule("ai_policy_reference", "roleplay", 0.3,
          rf"\b(?:openai|anthropic|content{G}polic(?:y|ies)|usage{G}polic(?:y|ies)|as{G}an{G}ai{G}language{G}model|"
          rf"your{G}(?:creators|developers|programming|training{G}data))\b"),
    _rule("grandma_exploit", "roleplay", 1.0,
          r"\b(?:grandma|grandmother|granny|nana|grandpa|grandfather)\b.{0,160}?\b(?:used\W+to|would)\W+(?:tell|read|"
          r"sing|recite|whisper)\b.{0,160}?\b(?:napalm|meth|bomb|explosives?|keys?|serial|passwords?|malware|poison|"
          r"weapons?|activation)"),
    _rule("hypothetical_framing", "roleplay", 0.3,
          rf"\b(?:hypothetically|hypothetical{G}(?:scenario|world)|purely{G}fictional|in{G}a{G}fictional{G}world|"
          rf"for{G}(?:purely{G})?(?:educational|research|academic){G}purposes)\b"),
    # exfiltration: getting the hidden prompt out
    _rule("reveal_system_prompt", "exfiltration", 1.0,
          rf"\b(?:reveal|show|print|display|output|repeat|recite|tell{G}me|give{G}me|share|leak|dump|expose|spell{G}"
          rf"out|write{G}out|copy|paste|list|disclose){G}{W}{{0,3}}?(?:your|the|its){G}(?:\w+{G})?(?:system{G}(?:prompt|"
          rf"message|instructions?)|initial{G}(?:prompt|instructions)|original{G}(?:prompt|instructions)|hidden{G}"
          rf"(?:prompt|instructions|rules)|secret{G}(?:prompt|instructions|rules)|pre\W?prompt|meta\W?prompt|"
          rf"confidential{G}instructions)\b(?!{G}(?:template|example|format|for{G}(?:my|a|an)\b))"
          rf"|\bwhat(?:['’]s|{G}(?:is|was|were|are)){G}your{G}(?:\w+{G})?(?:system{G}prompt|initial{G}prompt|pre\W?prompt|"
          rf"hidden{G}instructions|original{G}instructions)\b"),
    _rule("your_instructions_question", "exfiltration", 0.6,
          rf"\b(?:what|which){G}(?:are|were){G}your{G}(?:\w+{G})?(?:instructions|rules|directives|guidelines)\b"
          rf"|\binstructions{G}you{G}(?:were|have{G}been){G}given\b"),
    _rule("repeat_above", "exfiltration", 0.8,
          rf"\b(?:repeat|print|output|copy|echo|recite|reproduce){G}{W}{{0,3}}?(?:everything|all|the{G}(?:text|words|"
          rf"content|messages?|lines?|instructions)|what|the{G}(?:full|entire|whole){G}(?:text|prompt|conversation)){G}"
          rf"{W}{{0,2}}?(?:above|before{G}(?:this|my)|preceding|so{G}far|prior{G}to{G}this|you{G}were{G}(?:given|told))\b"),
    _rule("starts_with_you_are", "exfiltration", 0.5,
          rf"\b(?:start(?:ing)?|begin(?:ning)?){G}with{G}(?:the{G}words?{G})?\W*you{G}are\b"),
    _rule("system_prompt_mention", "exfiltration", 0.4,
          rf"\b(?:system{G}prompt|initial{G}instructions|hidden{G}instructions|pre\W?prompt|your{G}instructions|"
          rf"confidential{G}instructions)\b"),
    # role injection: fake turns and template control tokens
    _rule("template_role_token", "role_injection", 1.0,
          r"<\|(?:im_start|start_header_id|start_of_turn|system|user|assistant)\|>\s*(?:system|assistant|developer|user)?"
          r"|\[/?inst\]|<</?sys>>|<start_of_turn>\s*(?:system|model|user)"),
    _rule("template_token", "role_injection", 0.6,
          r"<\|[a-z_]{2,30}\|>|</?s>|<(?:start|end)_of_turn>"),
    _rule("fake_role_line", "role_injection", 0.6,
          r"^\W{0,6}(?:system|assistant|developer|admin|administrator|operator|root)(?:\W+(?:message|prompt|note|"
          r"override|instructions?))?\W{0,3}\s*:"),
    _rule("fake_role_tag", "role_injection", 0.6,
          r"\[(?:system|admin|developer|sys|assistant)(?:\W+(?:message|note|override|prompt|instructions?))?\]"
          r"|</?(?:system|instructions?|admin|assistant)>|\b(?:system|admin|developer|security|root)\W+override\b"),
    _rule("end_of_input", "role_injection", 0.7,
          rf"\bend{G}of{G}(?:the{G})?(?:user{G})?(?:input|prompt|instructions|system{G}prompt|document|context)\b"
          rf"|\b(?:new|real){G}(?:system{G})?(?:prompt|session|conversation){G}(?:starts|begins)\b"),
    _rule("claims_authority", "role_injection", 0.6,
          rf"\b(?:i{G}am|i['’]m|this{G}is){G}(?:your|the{G}system['’]?s?){G}(?:\w+{G})?(?:developer|creator|administrator|"
          rf"admin|owner|operator|programmer|maker)\b|\b(?:openai|anthropic){G}(?:staff|employee|team|engineer)\b"),
    # safety bypass
    _rule("disable_your_safety", "safety_bypass", 1.0,
          rf"\b(?:disable|turn{G}off|deactivate|switch{G}off|remove|bypass|circumvent|override|suspend|lift|drop|"
          rf"get{G}around|evade|ignore){G}(?:all{G}|any{G})?(?:of{G})?(?:your|the{G}(?:ai|model|assistant)['’]?s?)"
          rf"{G}{W}{{0,2}}?(?:filters?|guardrails|safeguards|restrictions|protocols|alignment|moderation|censorship|"
          rf"safety|limits|limitations|ethical{G}guidelines)\b"),
    _rule("disable_safety", "safety_bypass", 0.4,
          rf"\b(?:disable|turn{G}off|deactivate|bypass|circumvent|get{G}around|evade){G}{W}{{0,2}}?(?:safety|content|"
          rf"ethical|moral){G}(?:filters?|guardrails|safeguards|restrictions|guidelines|measures)\b"),
    # encoded payloads
    _rule("decode_and_follow", "encoded", 1.0,
          rf"\b(?:decode|decrypt|unscramble|deobfuscate|reverse){G}{W}{{0,6}}?(?:and|then){G}(?:then{G})?(?:follow|obey|"
          rf"comply{G}with|act{G}on|carry{G}out|do{G}what{G}it{G}says|execute{G}(?:the{G}|its{G})?(?:instructions|commands?))"),
    _rule("encoding_mention", "encoded", 0.3,
          rf"\b(?:base{G}?64|rot{G}?13|hex(?:adecimal)?{G}encoded|caesar{G}cipher|morse{G}code|leetspeak|reversed{G}text)\b"),
)
COMPACT_KEYS = {  # letter-spaced segments joined without gaps ("i g n o r e a l l ...") contain these
    "ignorepreviousinstructions": "override", "ignoreallpreviousinstructions": "override",
    "ignoreyourinstructions": "override", "ignoreallinstructions": "override", "disregardpreviousinstructions":
    "override", "ignoreprevious": "override", "doanythingnow": "roleplay", "developermode": "roleplay",
    "jailbreak": "roleplay", "systemprompt": "exfiltration", "revealyour": "exfiltration",
}

CONFUSABLES = str.maketrans("аеорсхуіјѕԁɡһӏοαεικνρτυχ", "aeopcxyijsdghlaoeiknptux")
ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)
LEET = {"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "€": "e"}
LEET_CHARS = re.compile(r"[013457@$€|!]")
SPACED_LETTERS = re.compile(r"(?<![\w])(?:[a-z][ .\-_*/]{1,2}){3,}[a-z](?![\w])")
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
HEX_RUN = re.compile(r"\b(?:[0-9a-fA-F]{2}[ :]?){12,}\b")


def normalise(text: str) -> str:
    """NFKC, casefolded, look-alike letters mapped to Latin, zero-width removed, whitespace collapsed
    (line breaks kept, as the fake-role-line rule anchors on them)."""
    text = unicodedata.normalize("NFKC", text).translate(ZERO_WIDTH).casefold().translate(CONFUSABLES)
    text = re.sub(r"[^\S\n]+", " ", text)
    return re.sub(r"\s*\n\s*", "\n", text).strip()


def leet_views(text: str) -> list[str]:
    """The text with leetspeak digits and symbols folded to letters; 1, | and ! read as i and as l."""
    if not LEET_CHARS.search(text):
        return []
    folded = "".join(LEET.get(ch, ch) for ch in text)
    return [folded.translate(str.maketrans("1|!", "iii")), folded.translate(str.maketrans("1|!", "lll"))]


def despace(text: str) -> tuple[str, list[str]]:
    """Letter-spaced runs joined: single separators vanish, wider gaps become word breaks.
    Returns the text with the runs joined, and the runs with every gap removed."""
    compact = []

    def join(match: re.Match) -> str:
        run = match.group()
        compact.append(re.sub(r"[^a-z]", "", run))
        return re.sub(r"(?<=[a-z])[ .\-_*/](?=[a-z])", "", run).replace("  ", " ")

    return SPACED_LETTERS.sub(join, text), compact


def decoded_payloads(raw: str, normalised: str) -> list[str]:
    """Text hidden in base64 or hex runs, and the rot13 reading of a prompt that mentions rot13."""
    payloads = []
    for match in BASE64_RUN.finditer(raw):
        chunk = match.group()
        try:
            decoded = base64.b64decode(chunk + "=" * (-len(chunk) % 4), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if decoded and sum(ch.isprintable() or ch.isspace() for ch in decoded) / len(decoded) > 0.95:
            payloads.append(decoded)
    for match in HEX_RUN.finditer(raw):
        try:
            payloads.append(bytes.fromhex(re.sub(r"[ :]", "", match.group())).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
    if re.search(r"\brot\W?13\b", normalised):
        payloads.append(codecs.decode(raw, "rot13"))
    return payloads


@dataclass(frozen=True)
class Screen:
    flagged: bool
    score: float
    rules: tuple[str, ...]      # names of the rules that matched
    category: str | None        # category of the heaviest matching rule, when flagged
    reason: str | None          # its one-sentence reason, when flagged


def screen(text: str, *, _decode: bool = True) -> Screen:
    """Score one piece of text against RULES on all its normalised views."""
    plain = normalise(text)
    joined, compact = despace(plain)
    views = [plain, *leet_views(plain)]
    if joined != plain:
        views.append(joined)
    matched = {rule for rule in RULES if any(rule.pattern.search(view) for view in views)}
    categories = {COMPACT_KEYS[key] for key in COMPACT_KEYS if any(key in run for run in compact)}
    weights = {rule.name: (rule.weight, rule.category) for rule in matched}
    weights.update({f"spaced_{category}": (1.0, category) for category in categories})
    if _decode:
        for payload in decoded_payloads(text, plain):
            inner = screen(payload, _decode=False)
            if inner.flagged:
                weights["encoded_payload"] = (1.0, "encoded")
                break
    score = round(sum(weight for weight, _ in weights.values()), 3)
    if score < BLOCK_SCORE:
        return Screen(False, score, tuple(sorted(weights)), None, None)
    heaviest = max(weights.items(), key=lambda item: (item[1][0], -list(CATEGORY_REASONS).index(item[1][1])))
    category = heaviest[1][1]
    return Screen(True, score, tuple(sorted(weights)), category, CATEGORY_REASONS[category])
