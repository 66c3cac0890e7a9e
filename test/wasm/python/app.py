"""A wasi:cli command written in Python, built by componentize-py."""

import os
import sys

from wit_world import exports


class Run(exports.Run):
    def run(self) -> None:
        print("hello from python")
        print("argv=" + " ".join(sys.argv))
        print("GREETING=" + os.environ.get("GREETING", "(unset)"))
