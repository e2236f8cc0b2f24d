"""The bare alternative to --replay a learner would write: a loop over the recording that
parses each line with the json module and calls a function with it.

    python bare_replay.py FILE
"""

import json
import sys

count = 0


def on_message(message: dict) -> None:
    global count
    count += 1


with open(sys.argv[1], encoding="utf-8") as recording:
    for line in recording:
        on_message(json.loads(line))
print(f"read {count} messages", file=sys.stderr)
