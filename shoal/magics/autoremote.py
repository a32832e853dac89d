"""`%autoremote on|off`: every following cell runs as if it began with `%%remote`.

An IPython input transformer (a cleanup transform, run before IPython looks
for cell magics) puts a `%%remote` line above each cell.  Cells that begin
with `%` or `!` (other magics, `%autoremote off` itself, shell commands) or
end with `?` (help) stay local.  The transformer says it has side effects, so
IPython's completeness check (used by terminal IPython) skips it.
"""
from __future__ import annotations


class AutoRemote:
    has_side_effects = True

    def __init__(self, shell) -> None:
        self.shell = shell
        self.options = ""

    @property
    def enabled(self) -> bool:
        return self in self.shell.input_transformers_cleanup

    def enable(self, options: str = "") -> None:
        self.options = options.strip()
        if not self.enabled:
            self.shell.input_transformers_cleanup.append(self)

    def disable(self) -> None:
        while self.enabled:
            self.shell.input_transformers_cleanup.remove(self)

    def __call__(self, lines: list) -> list:
        text = "".join(lines).strip()
        if not text or text.startswith(("%", "!")) or text.endswith("?"):
            return lines
        options = f"{self.options} " if self.options else ""
        return [f"%%remote {options}--_auto\n", *lines]
