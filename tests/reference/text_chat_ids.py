#!/usr/bin/env python3
"""Writes tests/fixtures/text/chat_case_expected_ids.txt: the HF `tokenizers` ids of the hand-written
expected prompts chat_case_expected.txt (thinking) and chat_case_expected_chat.txt (chat), so that
text_chat_test can compare the C++ tokenizer with the reference without Python in CI.

  pip install tokenizers==0.23.3 && scripts/fetch_tokenizer.sh
  python3 tests/reference/text_chat_ids.py
"""
import os
from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures", "text")
tok = Tokenizer.from_file(os.path.join(ROOT, "third_party", "tokenizer", "tokenizer.json"))
lines = ["# mode\tids of the expected prompt (file minus its final newline; HF tokenizers, "
         "add_special_tokens=False)"]
for mode, name in [("thinking", "chat_case_expected.txt"), ("chat", "chat_case_expected_chat.txt")]:
    with open(os.path.join(FIX, name), encoding="utf-8", newline="") as f:
        text = f.read().removesuffix("\n")
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == text, name
    lines.append(mode + "\t" + " ".join(map(str, ids)))
with open(os.path.join(FIX, "chat_case_expected_ids.txt"), "w", encoding="utf-8", newline="\n") as f:
    f.write("\n".join(lines) + "\n")
