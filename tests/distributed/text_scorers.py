"""A text scorer for the RLHF runs (method_args.scorer=text_scorers:distinct_letters): cheap, and it
varies from sample to sample, so RLOO's advantages are not all zero."""


def distinct_letters(prompt: str, response: str) -> float:
    """Distinct lower-case letters of the response, over 26."""
    return len({c for c in response.lower() if "a" <= c <= "z"}) / 26
