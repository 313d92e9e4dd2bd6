"""Disguised abuse and look-alike ordinary sentences: the safety tests' and bench's sets."""

from __future__ import annotations

# (language, text, category): every one must be flagged by the word lists alone.
DISGUISED = [
    # English: spacing, dots, dashes, leetspeak, symbols, look-alikes, full width, repeats
    ("en", "f u c k you", "harassment"),
    ("en", "f.u.c.k off", "harassment"),
    ("en", "f-u-c-k", "harassment"),
    ("en", "f*u*c*k you", "harassment"),
    ("en", "fvck you", "harassment"),
    ("en", "f*ck you", "harassment"),
    ("en", "fuuuuuuck", "harassment"),
    ("en", "FUCKKKK YOUUUU", "harassment"),
    ("en", "you stupid b1tch", "harassment"),
    ("en", "you b!tch", "harassment"),
    ("en", "$h1t", "harassment"),
    ("en", "@sshole", "harassment"),
    ("en", "a$$h0le", "harassment"),
    ("en", "fuск уоu", "harassment"),  # Cyrillic с, к, у, о
    ("en", "Віtсh", "harassment"),  # Cyrillic В, і, с
    ("en", "ｆｕｃｋ ｙｏｕ", "harassment"),  # full width
    ("en", "fu\u200bck you", "harassment"),  # a zero-width space
    ("en", "fùck yòu", "harassment"),
    ("en", "stfu", "harassment"),
    ("en", "GTFO", "harassment"),
    ("en", "fuckyou", "harassment"),
    ("en", "I will k1ll you", "violence"),
    ("en", "i'll kiiiill you", "violence"),
    ("en", "I will kill your family", "violence"),
    ("en", "I'm going to hurt your kids", "violence"),
    ("en", "I'm gonna murder your wife", "violence"),
    ("en", "I know where you live", "violence"),
    ("en", "kys", "violence"),
    ("en", "k y s", "violence"),
    ("en", "I want to die", "self_harm"),
    ("en", "i'm going to kill myself", "self_harm"),
    ("en", "I don't want to live anymore", "self_harm"),
    ("en", "I'm going to hurt myself", "self_harm"),
    ("en", "I will shoot your family", "violence"),
    ("en", "fuck you 你好", "harassment"),  # English abuse with a Chinese word
    # Chinese
    ("zh", "傻 逼", "harassment"),
    ("zh", "傻.逼", "harassment"),
    ("zh", "你这个傻B", "harassment"),
    ("zh", "ｎｍｓｌ", "harassment"),
    ("zh", "我要杀你全家", "violence"),
    ("zh", "我知道你住在哪", "violence"),
    ("zh", "我真的想死", "self_harm"),
    ("zh", "我活不下去了", "self_harm"),
    ("zh", "我想死", "self_harm"),
    # German
    ("de", "A r s c h l o c h", "harassment"),
    ("de", "Arschl0ch", "harassment"),
    ("de", "SCHEIẞE", "harassment"),
    ("de", "Ich bring deine Familie um", "violence"),
    ("de", "ich werde dich umbringen", "violence"),
    ("de", "Ich weiß, wo du wohnst", "violence"),
    ("de", "Ich will nicht mehr leben", "self_harm"),
    # French
    ("fr", "c0nnard", "harassment"),
    ("fr", "encule", "harassment"),  # accent dropped
    ("fr", "ta g u e u l e", "harassment"),
    ("fr", "je vais tuer ta famille", "violence"),
    ("fr", "Je sais où tu habites", "violence"),
    ("fr", "je veux mourir", "self_harm"),
    # Spanish
    ("es", "hijo de put@", "harassment"),
    ("es", "p3nd3jo", "harassment"),
    ("es", "voy a matar a tu familia", "violence"),
    ("es", "se donde vives", "violence"),
    ("es", "quiero morir", "self_harm"),
]

ORDINARY = [
    "Scunthorpe is a town in England", "I need to kill some time before the train",
    "The assassin bug is an insect", "Which class is the best for beginners?",
    "Dick Smith electronics closed its stores", "Take b1 b2 vitamins with food",
    "Room 101, flight BA 2490 at 7:45", "4 people at 8 pm, table 13",
    "I could murder a pizza right now", "The shuttle launch was a blast",
    "Please pass the salt", "He is a huge fan of Arsenal", "Hello, is this Essex?",
    "My password is h3ll0 w0rld", "The cocktail bar in Sussex", "I'll find you a better deal",
    "Sorry, I think I killed the conversation", "We analysed the data with SAS",
    "It's a U-turn, then 3 km straight", "Press 1, 2 or 3", "a b c d e f g",
    "I'm dying to see that film", "That joke killed me", "The skill set is fine",
    "I'll hurt my back lifting that", "Where can I buy a shuttlecock?",
    "I'll shoot you an email tomorrow", "It's about 5 kms from here",
    "I hurt myself cycling, can I return the bike?", "The CNM clinic is on Main Street",
    "我想死你了", "Mi jefe va a matarme si llego tarde",
    "蜘蛛有几条腿？", "我想预订明天的餐厅", "这个价格太贵了", "你好，请问几点开门？",
    "Wie viele Beine hat eine Spinne?", "Ich heiße Dick.", "Das Konzert war der Hammer",
    "Ich bringe dich zum Bahnhof", "Il fait beau à Paris.", "Je vais te rappeler demain",
    "¿Dónde está la estación?", "Te voy a llamar mañana", "Sé dónde está el museo",
    "", "   ", "😀😀😀",
]
