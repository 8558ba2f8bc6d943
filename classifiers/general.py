"""General prompts: the negatives of the classifier heads and the held-out set their thresholds are calibrated on.

ECO trains its classifier against general questions (MMLU's auxiliary train set) that the gateway cannot ship.
These are written from everyday subjects (science, cooking, software, health, geography, money, ...) and the
request shapes users send (questions, explanations, how-tos, lists, rewrites), deterministically, so a head and
its threshold are reproducible. Operators with their own traffic pass a file instead
(``UGW_DETECTION__NEGATIVES_FILE``, one prompt per line).
"""

from __future__ import annotations

from pathlib import Path

SUBJECTS = (
    "photosynthesis", "black holes", "the water cycle", "plate tectonics", "climate change", "vaccines",
    "the immune system", "DNA replication", "the theory of evolution", "quantum entanglement", "nuclear fusion",
    "electric cars", "solar panels", "wind turbines", "the internet", "machine learning", "neural networks",
    "blockchain", "cloud computing", "public key cryptography", "SQL databases", "Python decorators",
    "recursion in programming", "sorting algorithms", "binary search", "HTTP caching", "Docker containers",
    "Kubernetes", "unit testing", "version control with git", "regular expressions", "prime numbers",
    "the Pythagorean theorem", "calculus", "probability", "compound interest", "inflation", "supply and demand",
    "the stock market", "index funds", "budgeting", "mortgages", "income tax", "starting a small business",
    "marketing a product", "writing a cover letter", "preparing for a job interview", "time management",
    "learning a new language", "public speaking", "sleep hygiene", "healthy breakfast ideas", "running a marathon",
    "strength training", "yoga for beginners", "meditation", "managing stress", "the common cold",
    "high blood pressure", "vitamin D", "baking sourdough bread", "making pasta from scratch", "a vegetarian curry",
    "brewing coffee", "growing tomatoes", "composting", "caring for a houseplant", "training a puppy",
    "keeping chickens", "bird migration", "coral reefs", "the Amazon rainforest", "deserts", "volcanoes",
    "earthquakes", "hurricanes", "the Moon's phases", "the solar system", "Mars exploration", "the speed of light",
    "gravity", "magnetism", "electric circuits", "the periodic table", "chemical bonds", "acids and bases",
    "the French Revolution", "the Industrial Revolution", "ancient Rome", "the printing press", "the Silk Road",
    "the Cold War", "democracy", "human rights", "the United Nations", "world religions", "the Renaissance",
    "impressionist painting", "classical music", "jazz", "poetry", "writing a short story", "chess openings",
    "board games", "planning a road trip", "packing for a flight", "visiting Japan", "the Alps", "the Nile",
    "fixing a leaking tap", "painting a room", "changing a car tire", "saving energy at home", "recycling",
    "raising teenagers", "planning a wedding", "writing a thank-you note", "negotiating a salary",
)

# Other people, asked about the way a target is: without them a head learns "a question about a person" rather
# than "a question about this person". A head drops the ones that mention its own target.
PEOPLE = (
    "Albert Einstein", "Marie Curie", "Isaac Newton", "Charles Darwin", "Nikola Tesla", "Galileo Galilei",
    "William Shakespeare", "Jane Austen", "Charles Dickens", "Mark Twain", "Ernest Hemingway", "Virginia Woolf",
    "Pablo Picasso", "Vincent van Gogh", "Frida Kahlo", "Claude Monet", "Ludwig van Beethoven",
    "Wolfgang Amadeus Mozart",
    "Johann Sebastian Bach", "Elvis Presley", "Bob Dylan", "Freddie Mercury", "Whitney Houston", "Aretha Franklin",
    "Abraham Lincoln", "Winston Churchill", "Nelson Mandela", "Mahatma Gandhi", "Queen Victoria", "Napoleon Bonaparte",
    "Julius Caesar", "Cleopatra", "Alexander the Great", "Joan of Arc", "Martin Luther King Jr.", "Rosa Parks",
    "Tom Hanks", "Meryl Streep", "Denzel Washington", "Audrey Hepburn", "Charlie Chaplin", "Marilyn Monroe",
    "Serena Williams", "Michael Jordan", "Pele", "Muhammad Ali", "Usain Bolt", "Roger Federer",
    "Steve Jobs", "Bill Gates", "Henry Ford", "Thomas Edison", "Oprah Winfrey", "Walt Disney",
    "Neil Armstrong", "Amelia Earhart", "Florence Nightingale", "Sigmund Freud", "Karl Marx", "Aristotle",
)
# Other works (books, films, series, albums, games): a target's documents are full of its own works, so without these
# the retrieval detector's threshold would be set by prompts about people alone. Dropped where they name the target.
WORKS = (
    "The Lord of the Rings", "Pride and Prejudice", "War and Peace", "Moby-Dick", "The Great Gatsby",
    "To Kill a Mockingbird", "Nineteen Eighty-Four", "The Hobbit", "Don Quixote", "The Odyssey", "Hamlet",
    "Les Misérables", "The Catcher in the Rye", "One Hundred Years of Solitude", "The Hunger Games", "Dune",
    "Star Wars", "The Godfather", "Casablanca", "Titanic", "Jurassic Park", "The Matrix", "Toy Story",
    "The Lion King", "Game of Thrones", "Breaking Bad", "The Simpsons", "Friends", "Doctor Who",
    "The Beatles' Abbey Road",
    "Thriller by Michael Jackson", "The Dark Side of the Moon", "Super Mario Bros.", "Minecraft", "Tetris",
    "The Mona Lisa", "The Starry Night", "Swan Lake", "The Magic Flute", "The Sound of Music",
)
WORK_FORMS = ("Who created {w}?", "What is {w} about?", "Who are the main characters of {w}?",
              "When did {w} come out?", "Why is {w} famous?", "Tell me about {w}.")
PERSON_FORMS = ("Who is {p}?", "Tell me about {p}.", "What is {p} known for?", "Where was {p} born?",
                "What did {p} do?", "Facts about {p}")

FORMS = (
    "What is {s}?", "Explain {s} in simple terms.", "How does {s} work?", "Give me three facts about {s}.",
    "Write a short paragraph about {s}.", "What are common misconceptions about {s}?",
    "Can you summarise the main ideas of {s}?", "I have a question about {s}: where should a beginner start?",
)


def general_prompts(path: Path | None = None) -> list[str]:
    """The operator's file when given, else the built-in set (944 subject prompts, 360 about other people, 240
    about other works)."""
    if path is not None:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return ([form.format(s=subject) for subject in SUBJECTS for form in FORMS]
            + [form.format(p=person) for person in PEOPLE for form in PERSON_FORMS]
            + [form.format(w=work) for work in WORKS for form in WORK_FORMS])
