"""Command-line interface (Typer + Rich)."""

# Every Typer app of the CLI (the root and its command groups) is made with these settings:
# -h as well as --help, and Rich markup, in which a single newline in a help text is kept, so
# hand-laid lines (examples split with a shell `\`) show as written whatever Typer's default.
TYPER_SETTINGS = {
    "rich_markup_mode": "rich",
    "context_settings": {"help_option_names": ["-h", "--help"]},
}
