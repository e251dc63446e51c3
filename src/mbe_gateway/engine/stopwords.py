"""Words that say little about what a message is about, in English and Chinese.

They are left out of scoring and search terms (a query made only of them falls back to
using them: see text.terms). English entries are matched before stemming. Chinese
text is indexed as single characters and character pairs (text.py), so the Chinese
lists hold function characters and the common function words of two characters.
"""

from __future__ import annotations

from typing import Final

_ENGLISH_WORDS = """
    a about above after again against all also am an and any are aren as at be because been
    before being below between both but by can cannot could couldn d did didn do does doesn
    doing don down during each else ever few for from further get gets got had hadn has hasn
    have haven having he her here hers herself him himself his how i if in into is isn it its
    itself just ll m ma me might mightn more most much must mustn my myself need needn no nor
    not now o of off on once only or other our ours ourselves out over own please re really s
    same shall shan she should shouldn so some such t than that the their theirs them
    themselves then there these they this those through to too under until up us ve very was
    wasn we were weren what when where which while who whom why will with won would wouldn y
    yeah yes you your yours yourself yourselves
"""
ENGLISH: Final = frozenset(_ENGLISH_WORDS.split())

# Characters that carry grammar rather than topic: particles, pronouns, auxiliaries,
# measure words and the commonest prepositions. A single Chinese character in this set
# is not a term, and neither is a pair made only of them (我们, 这个, 可以 are caught here).
CHINESE_CHARS: Final = frozenset(
    "的了是在我你他她它们吗呢吧啊呀哦嗯哈和与及或也都就还又很太更最不没有这那个一些之而被把给让"
    "对从到为以于着过得地能会要想可么啦嘛哪谁该将请"
)

# Pairs of which at least one character is a content character, but that still say
# nothing about the topic.
_CHINESE_WORDS = """
    什么 怎么 怎样 为什 哪里 哪儿 哪些 如何 这样 那样 一个 一下 一点 有点 可能 应该 已经 没有 不是
    就是 还是 但是 因为 所以 如果 虽然 然后 现在 时候 知道 觉得 请问 谢谢 自己 大家 东西 事情
"""
CHINESE_WORDS: Final = frozenset(_CHINESE_WORDS.split())

# Sentence-final particles: a pair containing one is an artefact of where the sentence
# ended (能吃吗 gives 吃吗), not a word.
CHINESE_PARTICLES: Final = frozenset("的了吗呢吧啊呀哦嗯啦嘛")
