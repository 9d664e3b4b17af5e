"""Multilingual text used by the parity, streaming and benchmark tests."""

from __future__ import annotations

MULTILINGUAL: dict[str, str] = {
    "english": "The quick brown fox jumps over the lazy dog. It's 3:45 p.m. on Nov. 26th — isn't it?",
    "french": "Où est la bibliothèque ? Je voudrais emprunter « Les Misérables » d'Hugo, s'il vous plaît.",
    "german": "Größere Übungen fördern die Fähigkeit, schwierige Straßennamen auszusprechen: Äußerst!",
    "spanish": "¿Dónde está el niño? ¡Qué día tan señorial! El pingüino comió ñoquis en Año Nuevo.",
    "italian": "Perché l'università è così lontana? Più tardi andrò là, però non so quando.",
    "portuguese": "A ação da população não é só uma questão de coração; é também de razão.",
    "chinese": "今天天气很好，我们去公园散步吧。人工智能正在改变世界。",
    "japanese": "東京は日本の首都です。ひらがなとカタカナ、そして漢字を使います。",
    "korean": "안녕하세요! 오늘 날씨가 정말 좋네요. 한국어 토크나이저 테스트입니다.",
    "arabic": "مرحبا بالعالم! كيف حالك اليوم؟ الذكاء الاصطناعي يغير العالم.",
    "hindi": "नमस्ते दुनिया! आज मौसम बहुत अच्छा है। कृत्रिम बुद्धिमत्ता दुनिया बदल रही है।",
    "russian": "Съешь же ещё этих мягких французских булок, да выпей чаю. Ёлка!",
    "code": 'def fib(n: int) -> int:\n    """Return n-th Fibonacci."""\n'
    "    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\n"
    "for i in range(10):\n\tprint(f'{i=}', {\"k\": [1, 2.5, None]})\n",
    "emoji": "Launch 🚀🚀 done ✅ — family: 👨‍👩‍👧‍👦, flags: 🇫🇷🇯🇵, skin tones: 👍🏽👋🏿, keycap: 1️⃣",
    "whitespace": "a  b   c    d\n\n\n\t\t  \r\n   trailing   \u00a0nbsp\u2003em-space\u3000ideographic   ",
    "control_names": "[INST] <s> </s> [TOOL_CALLS] [AVAILABLE_TOOLS] [TOOL_RESULTS] <unk> <pad> [/INST]",
    "mixed": "Mixing English, 中文, العربية, हिन्दी and русский in one line: 1+1=2 ≠ 3 ∑∞ ½ ©®™",
}
