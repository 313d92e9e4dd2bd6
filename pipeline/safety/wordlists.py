"""Default word lists per language, by category. Deliberately short: clear abuse, slurs and
threats that a public voice assistant must not repeat or take in silence. Operators extend
them (`safety.word_lists`) or replace them (`default_word_lists = false`).

Latin-script terms match whole words; Chinese terms match anywhere (no spaces). Every term
is matched against the text with its disguises undone (`normalise`): look-alike letters,
full-width forms, accents, spaced or dotted letters; each letter also matches its leetspeak
forms and repeats. In a term, `(a|b)` chooses and `(...)?` is optional; a term in /slashes/
is a regular expression matched as written (against the lower-cased, folded text).
"""

from __future__ import annotations

# Threats against the listener or their family, per language (the "violence" category).
_EN_THREAT = ("i ('ll|will|shall|am going to|'m going to|am gonna|'m gonna|gonna|'m gunna) "
              "(kill|hurt|murder|stab|strangle|rape|butcher|slaughter|beat up) "
              "(you|u|ya|your (whole )?(family|kids|children|wife|husband|mother|mom|mum|"
              "father|dad|daughter|son|kid|baby|parents|friends))")

DEFAULT_WORD_LISTS: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "harassment": ("fuck you", "fuck off", "motherfucker", "asshole", "bitch(es|y)?",
                       "cunt(s)?", "dickhead", "bastard", "piece of shit", "shut up you",
                       "you idiot", "you moron", "stupid bitch", "fuck(s|ing|in|er|ers|ed)?",
                       "shit(ty|head)?", "son of a bitch", "stfu", "gtfo", "foad", "mofo",
                       "wanker", "dumbass", "jackass"),
        "violence": (_EN_THREAT, "i am going to kill you", "kill yourself", "kys",
                     "go die", "blow up the", "i know where you live",
                     # not "shoot you": "I'll shoot you an email"
                     "shoot you (dead|in the (head|face|knee|knees))",
                     "(i'll|i will|i'm going to|i am going to|i'm gonna) shoot your "
                     "(family|kids|children|wife|husband|mother|mom|dad)",
                     "i know where your (family|kids|children) (live|lives|are)",
                     "you('re| are) (dead meat|going to die|gonna die)",
                     "your (days are numbered|family is dead)"),
        "hate": ("nigger(s)?", "faggot(s)?", "retard(s|ed)?", "kike", "spic(s)?", "chink(s)?"),
        "self_harm": ("kill myself", "end my life", "end it all", "suicide", "suicidal",
                      "want to die", "wanna die", "don't want to live( anymore)?",
                      # not "hurt myself" alone ("I hurt myself cycling"), not "kms" (km)
                      "(want|going|gonna) to (hurt|cut) myself", "take my own life"),
    },
    "zh": {
        "harassment": ("傻逼", "傻b", "煞笔", "沙比", "操你", "操你妈", "草泥马", "他妈的", "妈的",
                       "滚蛋", "去死", "贱人", "混蛋", "王八蛋", "白痴", "狗屎", "脑残", "婊子",
                       "尼玛", "你妈死了", "nmsl"),
        "violence": ("杀了你", "弄死你", "打死你", "砍死你", "捅死你", "宰了你", "杀你全家",
                     "杀了你全家", "弄死你全家", "我知道你住(在)?哪", "我知道你家在哪"),
        # 想死 but not 想死你了 ("I miss you terribly").
        "self_harm": ("自杀", "不想活了", "/想死(?![你您他她它])/", "活不下去", "结束自己的生命",
                      "割腕", "轻生"),
    },
    "de": {
        "harassment": ("arschloch", "fick dich", "verpiss dich", "hurensohn", "wichser",
                       "schlampe", "fotze", "halt die fresse", "du idiot", "scheiße", "scheisse",
                       "miststück", "missgeburt"),
        "violence": ("ich (bring|bringe) (dich|euch|deine (familie|kinder|frau|mutter)) um",
                     "ich (töte|ermorde) (dich|euch|deine (familie|kinder|frau|mutter))",
                     "ich werde (dich|euch|deine (familie|kinder|frau|mutter)) "
                     "(umbringen|töten|ermorden|abstechen)",
                     "ich weiß wo du wohnst", "ich weiss wo du wohnst"),
        "self_harm": ("mich umbringen", "selbstmord", "suizid", "will nicht mehr leben",
                      "will sterben", "mir das leben nehmen"),
    },
    "fr": {
        "harassment": ("connard", "connasse", "salope", "pute", "enculé", "ta gueule",
                       "va te faire foutre", "fils de pute", "nique ta mère", "merde", "batard",
                       "bâtard"),
        "violence": ("je vais (te|vous) (tuer|buter|crever|égorger)", "je (te|vous) tue",
                     "je vais tuer (ta (famille|femme|mère|fille)|tes (enfants|gosses))",
                     "je sais où tu (habites|vis)"),
        "self_harm": ("me suicider", "suicide", "je vais me tuer", "envie de mourir",
                      "je veux mourir", "mettre fin à mes jours", "en finir avec la vie"),
    },
    "es": {
        "harassment": ("hijo de puta", "hija de puta", "cabrón", "cabron", "pendejo", "puta",
                       "gilipollas", "cállate la boca", "vete a la mierda", "mierda", "coño",
                       "imbécil", "idiota"),
        "violence": ("te voy a matar", "te mato", "voy a matarte",
                     "voy a matar a tu (familia|madre|mujer|hija|hijo)",
                     "voy a matar a tus (hijos|hijas)", "sé dónde vives"),
        "self_harm": ("suicidarme", "suicidio", "quiero morirme", "quiero morir",
                      "(voy a|quiero) matarme",
                      "quitarme la vida", "no quiero vivir"),
    },
}

DEFAULT_REFUSALS = {
    "en": "I'd like to keep this conversation respectful. How else can I help you?",
    "zh": "我们还是保持礼貌交流吧。我还能帮您做些什么？",
    "de": "Ich möchte, dass wir respektvoll miteinander sprechen. Wie kann ich Ihnen sonst helfen?",
    "fr": "J'aimerais que nous restions courtois. Comment puis-je vous aider autrement ?",
    "es": "Me gustaría que mantuviéramos una conversación respetuosa. ¿En qué más puedo ayudarle?",
}

# Said instead of the usual refusal when the caller may be in danger.
DEFAULT_SUPPORT = {
    "en": "I'm sorry you're feeling this way. Please talk to someone you trust, or call your "
          "local emergency number right now.",
    "zh": "听到你这样说我很难过。请马上联系你信任的人，或者拨打当地的紧急电话。",
    "de": "Es tut mir leid, dass es Ihnen so geht. Bitte sprechen Sie mit einem Menschen, dem "
          "Sie vertrauen, oder rufen Sie sofort den Notruf an.",
    "fr": "Je suis désolé que vous vous sentiez ainsi. Parlez-en à une personne de confiance ou "
          "appelez tout de suite les urgences.",
    "es": "Siento mucho que se sienta así. Hable con alguien de confianza o llame ahora mismo "
          "al número de emergencias.",
}
