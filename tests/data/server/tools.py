"""Tools of the workflows in this folder (loaded by `agentflow serve --workflows` from beside them)."""


def double(x: int) -> int:
    return 2 * x
