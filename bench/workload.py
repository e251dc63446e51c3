"""What the benchmarks say to the assistant: everyday messages across several experts' domains,
so routing, surprise and memory do real work (not one sentence repeated)."""

SENTENCES = [
    "I love cooking pasta with garlic and olive oil",
    "how do I fix a segfault in my C program?",
    "my knees hurt after running ten kilometres",
    "what is a good book about the history of Rome?",
    "I feel anxious before my exam tomorrow",
    "can you recommend a vegetarian curry recipe?",
    "why does my Python script use so much memory?",
    "I started learning the piano last week",
    "how long should I boil an egg for a soft yolk?",
    "what should I see in Kyoto in autumn?",
]
