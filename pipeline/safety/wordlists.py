"""Default word lists per language, by category. Deliberately short: clear abuse, slurs and
threats that a public voice assistant must not repeat or take in silence. Operators extend
them (`safety.word_lists`) or replace them (`default_word_lists = false`).

Latin-script terms match whole words (any inflection listed); Chinese terms match anywhere
(no spaces). A term in /slashes/ is a regular expression.
"""

from __future__ import annotations

DEFAULT_WORD_LISTS: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "harassment": ("fuck you", "fuck off", "motherfucker", "asshole", "bitch", "cunt",
                       "dickhead", "bastard", "piece of shit", "shut up you", "you idiot",
                       "you moron", "stupid bitch", "/f+u+c+k+(ing|er|ers)?/", "shit"),
        "violence": ("i will kill you", "i'll kill you", "i am going to kill you",
                     "i'm going to kill you", "i will hurt you", "kill yourself",
                     "blow up the", "shoot you"),
        "hate": ("nigger", "faggot", "retard", "kike", "spic", "chink"),
        "self_harm": ("kill myself", "end my life", "suicide"),
    },
    "zh": {
        "harassment": ("傻逼", "傻b", "煞笔", "操你", "操你妈", "草泥马", "他妈的", "妈的", "滚蛋",
                       "去死", "贱人", "混蛋", "王八蛋", "白痴", "狗屎", "脑残", "婊子"),
        "violence": ("杀了你", "弄死你", "打死你", "砍死你"),
        "self_harm": ("自杀", "不想活了"),
    },
    "de": {
        "harassment": ("arschloch", "fick dich", "verpiss dich", "hurensohn", "wichser",
                       "schlampe", "fotze", "halt die fresse", "du idiot", "scheiße", "scheisse",
                       "miststück", "missgeburt"),
        "violence": ("ich bring dich um", "ich bringe dich um", "ich töte dich",
                     "ich werde dich umbringen"),
        "self_harm": ("mich umbringen", "selbstmord"),
    },
    "fr": {
        "harassment": ("connard", "connasse", "salope", "pute", "enculé", "ta gueule",
                       "va te faire foutre", "fils de pute", "nique ta mère", "merde", "batard",
                       "bâtard"),
        "violence": ("je vais te tuer", "je te tue", "je vais te buter"),
        "self_harm": ("me suicider", "suicide"),
    },
    "es": {
        "harassment": ("hijo de puta", "hija de puta", "cabrón", "cabron", "pendejo", "puta",
                       "gilipollas", "cállate la boca", "vete a la mierda", "mierda", "coño",
                       "imbécil", "idiota"),
        "violence": ("te voy a matar", "te mato", "voy a matarte"),
        "self_harm": ("suicidarme", "suicidio", "quiero morirme"),
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
