"""The prompt format shared by training and evaluation (docs/method.md §4).

Training and evaluation must use exactly the same prompt: MetaMath/PiSSA/BA-LoRA train and
evaluate with the Alpaca "no input" template and put the loss on the response only.
"""

ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:"
)

# The MetaMathQA answer marker; GSM8K/MATH extraction reads the text after it.
ANSWER_MARKER = "The answer is: "


def format_prompt(instruction: str) -> str:
    """Return the Alpaca prompt for one instruction (the response follows directly)."""
    return ALPACA_PROMPT.format(instruction=instruction)
