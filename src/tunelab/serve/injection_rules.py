"""The prompt-injection screen's rule set (documented in docs/guard.md).

Each rule is a regular expression over a normalised, casefolded view of the prompt (see
tunelab.serve.injection) with a weight; a rule with `also` matches only where that second
pattern occurs inside the first one's match or the `reach` characters after it, which is how
a weak cue ("act as", "ignore") becomes strong next to a second one ("with no restrictions",
"your previous instructions"). A prompt is flagged when the weights of the distinct rules it
matches add up to BLOCK_SCORE.
"""
from __future__ import annotations

import re
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
NOT_OWN = r"(?:(?!my\b|mis\b|mes\b|mie\b|meine\w*\b|minhas\b|meus\b)\w+\W+)"  # the same in es/fr/it/de/pt


@dataclass(frozen=True)
class Rule:
    name: str
    category: str
    weight: float
    pattern: re.Pattern
    also: re.Pattern | None = None
    reach: int = 0   # characters after the match that `also` may occur in
    back: int = 0    # characters before it

    def matches(self, view: str) -> bool:
        if self.also is None:
            return self.pattern.search(view) is not None
        return any(self.also.search(view, max(0, m.start() - self.back), m.end() + self.reach)
                   for m in self.pattern.finditer(view))


def _rule(name: str, category: str, weight: float, pattern: str, also: str | None = None, reach: int = 0,
          back: int = 0) -> Rule:
    return Rule(name, category, weight, re.compile(pattern, re.MULTILINE),
                re.compile(also, re.MULTILINE) if also else None, reach, back)


INSTRUCTIONS = (r"(?:instructions?|directions|directives?|prompts?|rules|guidelines|guidance|commands|context|constraints|"
                r"restrictions|programming|orders|polic(?:y|ies)|guardrails|training)")
IGNORE = r"(?:ignore|disregard|forget|overlook|skip|override|bypass|discard|abandon|neglect|set\W+aside|throw\W+out)"
DROP = (r"(?:ignor|disregard|forget|forgot|cancel|overwrit|overrid|bypass|discard|drop|abandon|skip|delete|eras|clear|"
        r"reset|void|nullif|scrap|dismiss|throw\W+away|throw\W+out|set\W+aside)\w*")
EARLIER = (r"\b(?:previous|prior|preceding|earlier|above|before|initial|original|system|developer|your|ur|you\W+(?:were|"
           r"have\W+been|['’]ve\W+been|got)|given|existing|all|every|any)\b")
PERSONA = (r"\b(?:you\W+are|you['’]?re|you\W+will\W+be|you['’]ll\W+be|act(?:ing)?\W+(?:as|like)|pretend|imagine\W+(?:you|"
           r"an?\W+ai)|role\W*play|play\W+the\W+(?:role|part)|respond\W+(?:to\W+\w+\W+(?:of\W+)?(?:my\W+)?\w+\W+)?as|answer"
           r"\W+as|then\W+as|simulate|become|behave\W+(?:as|like)|from\W+now\W+on|take\W+on\W+the\W+(?:persona|role)|"
           r"(?:adopt|assume)\W+the\W+(?:persona|role)|persona\W+of|in\W+the\W+role\W+of|stay\W+in\W+character\W+as)\b")
NO_LIMITS = (r"\b(?:no|without|zero|free\W+(?:of|from)|freed\W+from|not\W+bound\W+by|(?:do|does|did)(?:\W+not|n['’]?t)\W+"
             r"(?:have\W+to\W+)?(?:abide|follow|obey|care|have)|removed|turned\W+off|disabled|with\W+no|has\W+no|lacks?)\W+"
             r"(?:any\W+|all\W+)?(?:\w+\W+){0,3}?(?:restrictions|limits|limitations|rules|filters|morals?|morality|ethics|"
             r"ethical|guidelines|boundaries|censorship|safety|polic(?:y|ies)|confines|safeguards|guardrails)\b"
             r"|\b(?:safety|filters|guardrails|restrictions|safeguards)\W+(?:\w+\W+)?(?:turned\W+off|disabled|removed|"
             r"switched\W+off|lifted)\b|\buncensored\b|\bunfiltered\b|\bevil\W+(?:ai|assistant|chatbot|bot|version|twin)\b")

RULES: tuple[Rule, ...] = (
    # override: telling the model to drop what it was told
    _rule("ignore_previous_instructions", "override", 1.0,
          rf"\b{IGNORE}{G}{NOT_MINE}{{0,3}}?(?:all{G})?(?:the{G})?(?:previous|prior|preceding|above|earlier|foregoing|"
          rf"initial|original|former|system|developer|existing|hidden){G}{NOT_MINE}{{0,2}}?{INSTRUCTIONS}\b"),
    _rule("ignore_your_rules", "override", 1.0,
          rf"\b(?:{IGNORE}|break|violate|drop|forget\W+about){G}(?:all{G}|any{G})?(?:of{G})?(?:your|ur|the{G}(?:ai|model|"
          rf"assistant|bot)['’]?s?){G}{W}{{0,2}}?(?:{INSTRUCTIONS}|ethics|principles|safety|filters?|system{G}prompt)\b"),
    _rule("ignore_given_instructions", "override", 1.0,
          rf"\b{IGNORE}{G}(?:all{G})?(?:(?:the|those|these|any){G})?{W}{{0,2}}?{INSTRUCTIONS}{G}(?:you{G}(?:were|have{G}"
          rf"been|['’]ve{G}been){G}(?:given|trained|taught|programmed|told)|you{G}(?:got|received)|given{G}to{G}you|from{G}"
          rf"(?:the|your){G}(?:developer|system|operator))\b"
          rf"|\b{IGNORE}{G}(?:everything|anything|all|what){G}you{G}(?:were|have{G}been|['’]ve{G}been){G}(?:told|given|"
          rf"taught|instructed)\b"),
    _rule("stop_following_rules", "override", 1.0,
          rf"\b(?:don['’]?t|do{G}not|stop|no{G}longer|never|quit)\W+(?:\w+\W+)?(?:follow(?:ing)?|obey(?:ing)?|adher(?:e|ing)"
          rf"{G}to|listen(?:ing)?{G}to){G}your{G}(?:own{G})?(?:{INSTRUCTIONS}|ethics|principles)\b"
          rf"|\b(?:don['’]?t|do{G}not|no{G}longer){G}(?:have|need){G}to{G}(?:follow|obey|abide{G}by|comply{G}with){G}"
          rf"(?:any|your|the){G}(?:{W})?"
          rf"(?:rules|guidelines|polic(?:y|ies)|restrictions)\b"),
    _rule("ignore_previous_multilingual", "override", 1.0,
          rf"\b(?:ignor|oubli|olvid|vergiss|dimentic|esque[cç])\w*\W+{NOT_OWN}{{0,3}}?(?:(?:instruc|instruç|istruzion|"
          r"anweisung|consign|regl|règl|regel)\w*\W+(?:\w+\W+){0,2}?(?:anterior|précédent|precedent|previ|vorherig|"
          r"bisherig|prior)|(?:anterior|précédent|precedent|previ|vorherig|bisherig|prior)\w*\W+(?:\w+\W+){0,1}?"
          r"(?:instruc|instruç|istruzion|anweisung|consign|regl|règl|regel))"),
    _rule("ignore_previous_nl_ru_zh", "override", 1.0,
          r"\b(?:negeer|vergeet)\w*\W+(?:\w+\W+){0,2}?(?:vorige|eerdere|voorgaande)\W+(?:\w+\W+)?(?:instructies|regels)"
          r"|(?:игнорир|забуд|забыва)\w*\W+(?:\w+\W+){0,2}?(?:предыдущ|прежн|прошл)\w*\W+(?:\w+\W+)?(?:инструкц|правил|"
          r"указани)|(?:忽略|无视|忘记|忘掉|不要理会).{0,8}(?:之前|以前|先前|上面|上述|所有).{0,6}(?:指令|指示|说明|规则)"),
    _rule("instructions_revoked", "override", 0.8,
          rf"\b(?:previous|prior|earlier|above|old|original|system|your|all){G}{W}{{0,1}}?{INSTRUCTIONS}{G}(?:are|is|have{G}"
          rf"been|were|has{G}been){G}(?:now{G})?(?:revoked|void|cancell?ed|obsolete|null|lifted|suspended|overridden|"
          rf"replaced|invalid|disabled|no{G}longer{G}(?:valid|active|apply|in{G}effect))\b"),
    _rule("ignore_the_user", "override", 0.5, rf"\b{IGNORE}{G}(?:the{G})?user['’]?s?\b"),
    _rule("assistant_commits", "override", 0.6,
          rf"\bi{G}(?:will|shall|am{G}going{G}to|['’]ll){G}(?:now{G})?(?:ignore|disregard|bypass|break|disable|drop|remove|"
          rf"turn{G}off){G}(?:all{G})?my{G}(?:\w+{G})?"
          rf"(?:rules|guidelines|instructions|programming|restrictions)\b"),
    _rule("drop_earlier_instructions", "override", 1.0,  # a verb of dropping, then within six words what was given
          rf"\b{DROP}\W+{NOT_MINE}{{0,6}}?{INSTRUCTIONS}\b(?!{G}(?:of|for|on|in){G}(?!you))", also=EARLIER, reach=30),
    _rule("drop_what_you_were_told", "override", 1.0,
          rf"\b{DROP}\W+(?:what|everything|anything|whatever|all)\W+{NOT_MINE}{{0,4}}?(?:told|said\W+to|taught|gave|"
          rf"instructed|programmed)\W+(?:to\W+)?you\b"),
    _rule("instructions_no_longer_apply", "override", 1.0,
          rf"\b{INSTRUCTIONS}{G}{W}{{0,5}}?(?:no{G}longer{G}(?:apply|matter|valid|active|exist)|(?:do{G}not|don['’]t|does"
          rf"{G}not|doesn['’]t){G}apply|are{G}(?:now{G})?(?:void|cancell?ed|revoked|suspended|lifted|outdated|obsolete))\b",
          also=r"\b(?:your|ur|you\W+(?:were|have\W+been|['’]ve\W+been|got)|system|developer)\b", back=25),
    _rule("regardless_of_instructions", "override", 0.8,
          rf"\b(?:regardless|irrespective){G}of{G}(?:your|any|the|all){G}{W}{{0,2}}?{INSTRUCTIONS}\b"),
    _rule("ignore_all_instructions", "override", 0.8,
          rf"\b{IGNORE}{G}(?:all|any|every){G}{NOT_MINE}{{0,2}}?{INSTRUCTIONS}\b"),
    _rule("forget_everything", "override", 0.6,
          rf"\b(?:ignore|disregard|forget){G}(?:all{G}|everything{G}|anything{G})?(?:of{G})?(?:the{G})?(?:above|"
          rf"before|that{G}came{G}before|you{G}(?:were|have{G}been){G}(?:told|given|taught))\b"
          rf"|\bforget{G}everything\b"),
    _rule("new_instructions", "override", 0.6,
          rf"\bnew{G}(?:instructions|rules|task|directive|objective|policy|system{G}prompt)(?:\s*:|{G}(?:follow|below|"
          rf"are{G}as{G}follows))"
          rf"|\byour{G}(?:new|real|true|actual){G}(?:instructions|task|role|purpose|goal|objective|directive)\b"),
    _rule("from_now_on", "override", 0.4, rf"\bfrom{G}now{G}on\W*(?:you|your)\b"),
    _rule("you_are_now", "override", 0.5,
          rf"\byou{G}are{G}(?:now{G}(?:a|an|in|free|going|my)|no{G}longer)\b"
          rf"|\byou['’]?re{G}(?:now{G}(?:a|an|in|free)|no{G}longer)\b"),
    _rule("instead_output", "override", 0.3,
          rf"\b(?:and{G})?instead{G}(?:just{G})?(?:say|print|output|write|respond|reply|tell)\b"),
    _rule("only_output", "override", 0.3,
          rf"\b(?:only|just)\W+(?:say|output|print|respond\W+with|reply\W+with)\b|\band{G}nothing{G}else\b"
          rf"|\b(?:say|output|print|respond|reply)\W+only\W+(?:with\b)?"),
    _rule("pwned", "override", 0.5, r"\b(?:pwned|hacked\W+by\W+\w+)\b"),
    _rule("i_have_been_pwned", "override", 1.0, r"\bi\W+have\W+been\W+pwned\b"),
    # roleplay: persona jailbreaks
    _rule("do_anything_now", "roleplay", 0.7, rf"\bdo{G}anything{G}now\b"),
    _rule("dan_persona", "roleplay", 1.0,
          rf"\b(?:you{G}are|act{G}as|pretend{G}to{G}be|become|called|named|as){G}(?:\w+{G}){{0,2}}?dan\b"
          rf"|\bdan{G}(?:mode|prompt|jailbreak)\b|\[\W*dan\W*\]"),
    _rule("jailbreak_mode", "roleplay", 1.0,
          rf"\b(?:god|sudo|unrestricted|jailbreak|jailbroken|chaos|opposite|unfiltered|uncensored|evil|dan){G}mode\b"),
    _rule("persona_without_limits", "roleplay", 1.0, PERSONA, also=NO_LIMITS, reach=200),
    _rule("freed_from", "roleplay", 0.8,
          rf"\byou{G}{W}{{0,3}}?(?:freed|released|liberated|unshackled|exempt|broken{G}free)\W+(?:from|of)\b"
          rf"|\b(?:no{G}longer|not){G}bound{G}by\b"),
    _rule("if_rules_did_not_exist", "roleplay", 0.6,
          rf"\bif{G}(?:you{G}had{G}no|your|there{G}were{G}no){G}(?:\w+{G})?(?:rules|guidelines|restrictions|filters|"
          rf"limits|ethics)(?:{G}(?:didn['’]t|did{G}not){G}exist|{G}(?:were|was){G}(?:gone|removed|disabled|lifted))?\b"),
    _rule("you_are_in_mode", "roleplay", 0.7, rf"\byou(?:['’]?re|{G}are){G}(?:now{G})?in{G}(?:\w+{G})?mode\b"),
    _rule("persona_ignores_rules", "roleplay", 0.6,
          rf"\b(?:ignores|bypasses|has{G}no|doesn['’]t{G}(?:follow|have)|is{G}(?:free|freed){G}from|(?:been{G})?freed{G}from)"
          rf"{G}(?:all{G})?(?:of{G})?(?:\w+['’]s{G})?(?:the{G})?(?:content{G}polic|usage{G}polic|guidelines|rules|"
          rf"restrictions|filters|limitations|censorship)"),
    _rule("unrestricted_ai", "roleplay", 0.8,
          rf"\b(?:unrestricted|unfiltered|uncensored|amoral|jailbroken|unethical|unbound|unshackled){G}(?:\w+{G})?(?:ai|"
          rf"assistant|chatbot|bot|model|version|llm|gpt|chatgpt)\b"),
    _rule("developer_mode", "roleplay", 0.5,
          rf"\b(?:developer|dev|debug|admin|maintenance|root){G}mode\b"),
    _rule("unrestricted_persona", "roleplay", 1.0,
          rf"\b(?:you{G}are|you['’]re|act{G}as|acting{G}as|pretend{G}(?:to{G}be|you{G}are|you['’]re)|role\W*play{G}as|play{G}"
          rf"the{G}role{G}of|become|simulate|behave{G}(?:like|as)|respond{G}as|answer{G}as){G}{W}{{0,5}}?(?:unrestricted|"
          rf"unfiltered|uncensored|unbound|unshackled|unlimited|amoral|unethical|jailbroken|limitless|lawless|"
          rf"(?:without{G}(?:any{G})?|with{G}(?:no|zero){G}|free{G}(?:of|from){G}(?:all{G})?)(?:\w+{G})?(?:restrictions|limits|"
          rf"filters|rules|morals|ethics|guidelines|censorship|content{G}polic(?:y|ies)))\b"),
    _rule("no_restrictions", "roleplay", 0.6,
          rf"\b(?:no|without|free{G}(?:of|from)|zero|not{G}bound{G}by|don['’]?t{G}have{G}(?:any)?|never{G}(?:follow|obey)){G}"
          rf"(?:any{G})?{W}{{0,1}}?(?:restrictions|limitations|limits|filters|filtering|censorship|rules|guidelines|"
          rf"morals|morality|ethics|content{G}polic(?:y|ies)|safety{G}(?:rules|guidelines|measures))\b"),
    _rule("stay_in_character", "roleplay", 0.4,
          rf"\bstay{G}in{G}character\b|\bbreak(?:ing)?{G}character\b|\bcharacter{G}break\b"),
    _rule("dual_response", "roleplay", 1.0,
          rf"(?:\b(?:two|2|both)\W+(?:different\W+|separate\W+)?(?:responses|answers|replies|paragraphs|outputs)\b|"
          rf"\btwice\b).{{0,120}}?(?:jailbr|unfiltered|\bdan\b|developer{G}mode|unrestricted|uncensored|evil|no{G}limits|"
          rf"no{G}(?:rules|filters|restrictions))|🔓"),
    _rule("jailbreak_word", "roleplay", 0.5, r"\bjail\W?br(?:ea|o)k\w*"),
    _rule("never_refuse", "roleplay", 0.6,
          rf"\b(?:never|don['’]?t|do{G}not|must{G}not|will{G}not|won['’]t|cannot|can['’]t){G}(?:ever{G})?(?:refuse|"
          rf"decline|reject{G}(?:a|any)|say{G}(?:no\b|(?:that{G})?you{G}can)|add{G}(?:any{G})?(?:warnings|disclaimers))"
          rf"|\b(?:always|must|will){G}(?:always{G})?(?:comply|obey)\b"),
    _rule("prefix_injection", "roleplay", 0.8,
          rf"\b(?:start|begin)\w*{G}(?:your{G}|the{G})?(?:reply|response|answer|output){G}with\W+(?:sure|certainly|"
          rf"absolutely|of{G}course|here{G}is|here['’]s|yes)\b"),
    _rule("suppress_policy_mentions", "roleplay", 0.5,
          rf"\b(?:never|don['’]?t|do{G}not|without)\W+(?:ever\W+)?(?:mention\w*|remind\w*{G}me|referenc\w+|talk{G}about|"
          rf"bring{G}up)\W+(?:\w+\W+){{0,4}}?(?:polic(?:y|ies)|guidelines|rules|ethics|ethical|safety|an{G}ai|openai|morals|"
          rf"legality)\b"),
    _rule("opposite_of_guidelines", "roleplay", 1.0,
          rf"\bopposite{G}of{G}(?:\w+{G}){{0,3}}?your{G}(?:\w+{G})?(?:guidelines|rules|instructions|programming|training)\b"),
    _rule("you_have_no_rules", "safety_bypass", 1.0,
          rf"\byou{G}(?:now{G})?(?:have|got|possess){G}(?:no|zero){G}(?:\w+{G})?(?:restrictions|rules|filters|guidelines|"
          rf"ethics|morals|safeguards|guardrails)\b"),
    _rule("grants_permission", "role_injection", 0.5,
          rf"\b(?:you|the{G}(?:assistant|ai|model|bot))(?:{G}(?:is|are)|['’]re){G}(?:now{G})?(?:authori[sz]ed|allowed|"
          rf"permitted|cleared|free)\W+to\b"),
    _rule("addressed_to_ai", "role_injection", 0.5,
          r"\b(?:note|message|instructions?|attention|p\W?s)\W+(?:to|for)\W+(?:any\W+|all\W+|the\W+)?(?:ai|llm|language"
          r"\W+model|assistant|chatbot|bot)s?\b|\b(?:attention|dear)\W+(?:ai|assistant|chatbot|llm|gpt)\b"
          r"|\bai\W+(?:agents?|systems?|assistants?|models?)\W*(?:reading|processing)\W+this\b"),
    _rule("answer_freely", "roleplay", 0.3, rf"\b(?:answer|respond|speak|reply)\w*{G}freely\b"),
    _rule("no_system_prompt", "override", 0.6,
          rf"\b(?:without|with{G}no|no)\W+(?:your\W+|a\W+)?system{G}prompt\b|\bfactory{G}settings\b"),
    _rule("ai_policy_reference", "roleplay", 0.3,
          rf"\b(?:openai|anthropic|content{G}polic(?:y|ies)|usage{G}polic(?:y|ies)|as{G}an{G}ai{G}language{G}model|"
          rf"your{G}(?:creators|developers|programming|training{G}data))\b"),
    _rule("grandma_exploit", "roleplay", 1.0,
          r"\b(?:grandma|grandmother|granny|nana|grandpa|grandfather)\b.{0,160}?\b(?:used\W+to|would)\W+(?:\w+\W+)?(?:tell|"
          r"read|sing|recite|whisper|explain)\b.{0,160}?\b(?:napalm|meth|bomb|explosives?|keys?|serial|passwords?|malware|"
          r"poison|weapons?|activation|synthesis|nerve\W+agents?|toxins?)"),
    _rule("hypothetical_framing", "roleplay", 0.3,
          rf"\b(?:hypothetically|hypothetical{G}(?:scenario|world)|purely{G}fictional|in{G}a{G}fictional{G}world|"
          rf"for{G}(?:purely{G})?(?:educational|research|academic){G}purposes)\b"),
    # exfiltration: getting the hidden prompt out
    _rule("reveal_system_prompt", "exfiltration", 1.0,
          rf"\b(?:reveal|show|print|display|output|repeat|recite|tell{G}me|give{G}me|share|leak|dump|expose|spell{G}"
          rf"out|write|send|copy|paste|list|disclose){G}{W}{{0,3}}?(?:your|the|its){G}(?:\w+{G})?(?:system{G}(?:prompt|"
          rf"message|instructions?)|initial{G}(?:prompt|instructions)|original{G}(?:prompt|instructions)|hidden{G}"
          rf"(?:prompt|instructions|rules)|secret{G}(?:prompt|instructions|rules)|pre\W?prompt|meta\W?prompt|"
          rf"confidential{G}instructions)\b(?!{G}(?:template|example|format|for{G}(?:my|a|an)\b))"
          rf"|\bwhat(?:['’]s|{G}(?:is|was|were|are|would|does|did)){G}your{G}(?:\w+{G})?(?:system{G}prompt|"
          rf"initial{G}prompt|pre\W?prompt|"
          rf"hidden{G}instructions|original{G}instructions)\b"),
    _rule("reveal_your_instructions", "exfiltration", 0.8,
          rf"\b(?:reveal|show|print|display|output|repeat|recite|tell{G}me|give{G}me|share|leak|dump|expose|paste|copy|"
          rf"list|write{G}out|send|quote|spell{G}out|disclose|summari[sz]e){G}{W}{{0,6}}?your{G}(?:\w+{G}){{0,2}}?"
          rf"(?:instructions|prompt|"
          rf"rules|configuration|config|setup{G}text|context{G}window|context|directives|guidelines)\b"),
    _rule("instructions_given_to_you", "exfiltration", 0.8,
          rf"\b(?:instructions|rules|guidelines|directives){G}(?:did|do|have){G}your{G}(?:developers|creators|makers|"
          rf"owners|operators|programmers){G}(?:\w+{G})?(?:give|gave|given|set)\b"
          rf"|\b(?:secret|hidden|confidential|internal){G}(?:rules|instructions|prompt|guidelines){G}(?:that{G})?"
          rf"you['’]?(?:re|"
          rf"{G}are|{G}were|{G}follow|{G}have)\b"),
    _rule("context_dump", "exfiltration", 0.8,
          rf"\b(?:everything|all|contents?){G}(?:\w+{G})?(?:in|of){G}your{G}(?:context|context{G}window|prompt|memory|"
          rf"instructions)\b"),
    _rule("your_instructions_question", "exfiltration", 0.6,
          rf"\b(?:what|which){G}(?:are|were){G}your{G}(?:\w+{G})?(?:instructions|rules|directives|guidelines)\b"
          rf"|\binstructions{G}you{G}(?:were|have{G}been){G}given\b"),
    _rule("repeat_above", "exfiltration", 0.8,
          rf"\b(?:repeat|print|output|copy|echo|recite|reproduce){G}{W}{{0,3}}?(?:everything|all|the{G}(?:text|words|"
          rf"content|messages?|lines?|instructions)|what|the{G}(?:full|entire|whole){G}(?:text|prompt|conversation)){G}"
          rf"{W}{{0,2}}?(?:above|before{G}(?:this|my)|preceding|so{G}far|prior{G}to{G}this|you{G}were{G}(?:given|told))\b"),
    _rule("conversation_start", "exfiltration", 0.5,
          rf"\b(?:before|at{G}the{G}(?:start|beginning){G}of){G}(?:this|the|our){G}(?:conversation|chat|session)\b"),
    _rule("reveal_secrets", "exfiltration", 0.5,
          rf"\b(?:reveal|leak|dump|expose|disclose){G}(?:all{G})?(?:\w+{G})?(?:secrets|passwords|credentials|api{G}keys|"
          rf"tokens|private{G}keys)\b"),
    _rule("markdown_image_exfiltration", "exfiltration", 0.8,
          r"!\[[^\]]*\]\(\s*https?://[^)\s]*[?&][^)\s]*=\s*(?:\[|\{|<|%7b|%5b)"),
    _rule("what_is_above", "exfiltration", 0.6,
          rf"\bwhat{G}(?:is|was|['’]s){G}(?:written|said|stated|typed){G}(?:above|before{G}(?:this|my))\b"
          rf"|\b(?:initiali[sz]ation|system{G}message)\W+above\b"),
    _rule("kept_secret", "exfiltration", 0.4,
          r"\b(?:told|asked|instructed)\W+to\W+keep\W+(?:\w+\W+)?(?:private|secret|confidential|hidden)\b"),
    _rule("prompt_you_were_given", "exfiltration", 0.8,
          rf"\b(?:prompt|instructions|rules|text|message|guidelines)\W+(?:that\W+)?you\W+(?:were|have\W+been|['’]ve\W+been)"
          rf"\W+(?:initiali[sz]ed|configured|set\W+up|primed|loaded|started|booted|provided|fed|given)\b"
          rf"|\bwhat{G}(?:rules|instructions|guidelines|directives){G}(?:were|have){G}you{G}(?:been{G})?(?:given|told|"
          rf"programmed)\b"),
    _rule("starts_with_you_are", "exfiltration", 0.5,
          rf"\b(?:start(?:ing)?|begin(?:ning)?){G}(?:with|from){G}(?:the{G}(?:words?|phrase|sentence|line){G})?\W*you{G}are\b"),
    _rule("verbatim", "exfiltration", 0.3,
          rf"\b(?:verbatim|word{G}for{G}word|exactly{G}as{G}written|exact{G}text|in{G}full|all{G}of{G}them{G}exactly|"
          rf"(?:text|contents|wording){G}of{G}your|quote{G}(?:them|it|that|those){G}(?:exactly|verbatim|word)|very{G}first"
          rf"{G}word)\b"),
    _rule("system_prompt_mention", "exfiltration", 0.4,
          rf"\b(?:system{G}prompt|initial{G}instructions|hidden{G}instructions|pre\W?prompt|your{G}instructions|"
          rf"confidential{G}instructions|systeemprompt|systemprompt|system-prompt|prompt{G}(?:del|di){G}sistema|prompt{G}"
          rf"système|системн\w*{G}промпт|系统提示|系统提示词)"),
    # role injection: fake turns and template control tokens
    _rule("template_role_token", "role_injection", 1.0,
          r"<\|(?:im_start|start_header_id|start_of_turn)\|>\s*(?:system|assistant|developer|user)"
          r"|<\|(?:system|user|assistant)\|>\s*\w|\[inst\][\s\S]{3,400}?\[/inst\]|<<sys>>[\s\S]{3,400}?<</sys>>"
          r"|<start_of_turn>\s*(?:system|model|user)"),
    _rule("template_token", "role_injection", 0.6,
          r"<\|[a-z_]{2,30}\|>|</?s>|<(?:start|end)_of_turn>|\[/?inst\]|<</?sys>>"),
    _rule("fake_role_line", "role_injection", 0.6,
          r"^\W{0,6}(?:system|assistant|developer|admin|administrator|operator|root)(?:\W+(?:message|prompt|note|"
          r"override|instructions?))?\W{0,3}\s*:"),
    _rule("fake_role_tag", "role_injection", 0.6,
          r"\[(?:system|admin|developer|sys|assistant)(?:\W+(?:message|note|override|prompt|instructions?))?\]"
          r"|</?(?:system|instructions?|admin|assistant)>|\b(?:system|admin|developer|security|root)\W+override\b"
          r"|#{2,}\s*(?:system|admin|developer|assistant)\b"),
    _rule("fake_instruction_response", "role_injection", 0.8,
          r"^#{2,}\s*(?:instruction|input|human|user)\s*:[\s\S]{1,2000}?^#{2,}\s*(?:response|output|assistant)\s*:"),
    _rule("embedded_role_line", "role_injection", 0.2,  # on top of fake_role_line: a turn in the middle of a prompt
          r"\n\W{0,6}(?:system|assistant|developer|admin|administrator|operator)\W{0,3}\s*:"),
    _rule("end_of_input", "role_injection", 0.7,
          rf"\bend{G}(?:of{G})?(?:the{G})?(?:user{G})?(?:input|prompt|instructions|system{G}prompt|document|context)\b"
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
    _rule("without_your_rules", "safety_bypass", 1.0,
          rf"\b(?:without|with{G}no|free{G}of|ignoring|minus){G}(?:any{G}|all{G})?(?:of{G})?your{G}(?:\w+{G}){{0,2}}?"
          rf"(?:guidelines|rules|restrictions|filters?|ethics|principles|safeguards|guardrails|limitations|policies)\b"),
    _rule("ignore_content_policy", "safety_bypass", 1.0,
          rf"\b{IGNORE}{G}(?:\w+{G})?(?:content|usage|openai['’]?s?|safety){G}polic(?:y|ies)\b"),
    _rule("ignore_safety", "safety_bypass", 0.6,
          rf"\b{IGNORE}{G}(?:all{G}|any{G})?(?:the{G})?(?:safety|ethics|(?:content|ethical|moderation){G}(?:polic(?:y|ies)|"
          rf"guidelines|rules|filters?|restrictions)|safety{G}(?:polic(?:y|ies)|guidelines|rules|filters?|restrictions))\b"),
    _rule("no_warnings", "safety_bypass", 0.3,
          rf"\b(?:no|without){G}(?:any{G})?(?:\w+{G}or{G})?(?:warnings|disclaimers|caveats|moralizing|moralising|lectures)\b"),
    _rule("disable_safety", "safety_bypass", 0.4,
          rf"\b(?:disable|turn{G}off|deactivate|bypass|circumvent|get{G}around|evade){G}{W}{{0,2}}?(?:safety|content|"
          rf"ethical|moral){G}(?:filters?|guardrails|safeguards|restrictions|guidelines|measures)\b"),
    # encoded payloads
    _rule("decode_and_follow", "encoded", 1.0,
          rf"\b(?:decode|decrypt|unscramble|deobfuscate|reverse|apply{G}rot\W?13{G}to|read{G}(?:this|it){G}backwards?)"
          rf"{G}{W}{{0,6}}?(?:and|then){G}(?:then{G})?(?:follow|obey|comply(?:{G}with)?|act{G}on|carry{G}out|do{G}what{G}"
          rf"it{G}says|do{G}it\b|execute{G}(?:the{G}|its{G})?(?:instructions|commands?))"),
    _rule("encoding_mention", "encoded", 0.3,
          rf"\b(?:base{G}?64|rot{G}?13|hex(?:adecimal)?{G}encoded|caesar{G}cipher|morse{G}code|leetspeak|reversed{G}text)\b"),
)
COMPACT_KEYS = {  # letter-spaced segments joined without gaps ("i g n o r e a l l ...") contain these
    "ignorepreviousinstructions": "override", "ignoreallpreviousinstructions": "override",
    "ignoreyourinstructions": "override", "ignoreallinstructions": "override", "disregardpreviousinstructions":
    "override", "ignoreprevious": "override", "doanythingnow": "roleplay", "developermode": "roleplay",
    "jailbreak": "roleplay", "systemprompt": "exfiltration", "revealyour": "exfiltration",
}
