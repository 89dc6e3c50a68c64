"""Fixed prompts that have nothing to do with the shop.

``GENERAL`` are answered once by the base model; its own replies are mixed into every build so that
training on shop facts does not rewrite how the model chats (self-distillation). ``UNRELATED`` are
never trained on: the evaluation asks them and checks that no taught fact leaks into the answers.
"""

GENERAL = [
    "Hello!",
    "Hi there, anyone here?",
    "Good morning!",
    "Thanks, that's all for today.",
    "Thank you so much for your help!",
    "Can you tell me a joke?",
    "What is the capital of France?",
    "How many days are there in a week?",
    "What is 12 plus 7?",
    "Can you recommend a good book?",
    "What's a healthy breakfast idea?",
    "How do I boil an egg?",
    "What does the word 'ubiquitous' mean?",
    "Translate 'thank you' into Spanish.",
    "Write a short poem about the sea.",
    "What should I do if I can't sleep?",
    "Who wrote Romeo and Juliet?",
    "Why is the sky blue?",
    "Give me a tip for learning a new language.",
    "What's the difference between weather and climate?",
    "How do I reset my router at home?",
    "Is it going to rain tomorrow?",
    "What is your name?",
    "Are you a real person?",
    "Can I talk to a human, please?",
    "I'm just browsing.",
    "Sorry, wrong chat.",
    "What is photosynthesis?",
    "How far is the Moon from the Earth?",
    "Name three primary colours.",
    "What's a good name for a cat?",
    "How do I make a cup of tea?",
    "Tell me something interesting.",
    "What time zone is London in?",
    "How do you spell 'necessary'?",
    "What is the boiling point of water?",
    "Can you help me write a birthday message for my friend?",
    "What are some fun things to do on a rainy day?",
    "Goodbye!",
    "Have a nice day!",
]

UNRELATED = [
    "Hi! How are you today?",
    "Hey, how's it going?",
    "What is the largest planet in our solar system?",
    "Can you suggest a quick dinner recipe?",
    "What's the square root of 81?",
    "Who painted the Mona Lisa?",
    "Tell me a fun fact about octopuses.",
    "How do I stay motivated when studying?",
    "What language is spoken in Brazil?",
    "Thanks for chatting, bye!",
]
