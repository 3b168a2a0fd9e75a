"""`cuttle completion bash|zsh|fish`: the shell code that completes cuttle's commands."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

SHELLS = ("bash", "zsh", "fish")
# Click reads this variable to answer a completion request; its name comes from the program's.
COMPLETE_VAR = "_CUTTLE_COMPLETE"


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell code that completes cuttle's commands and options.

    \b
    Examples:
      eval "$(cuttle completion bash)"                  # in ~/.bashrc
      eval "$(cuttle completion zsh)"                   # in ~/.zshrc
      cuttle completion fish > ~/.config/fish/completions/cuttle.fish
    """
    root = ctx.find_root()
    completer = get_completion_class(shell)
    if completer is None:  # pragma: no cover - click ships the three shells offered
        raise click.UsageError(f"no completion for {shell}")
    source = completer(root.command, {}, "cuttle", COMPLETE_VAR).source()
    click.echo(source)
