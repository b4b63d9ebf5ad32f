"""`logitls bench`: where the time goes, as ratios measured in one run on one machine.

1. keystroke: append one character to a ~1000-token document and ask for the top 10, with the
   document's KV cache kept, against a cold full prefill of the same document and against the
   same keystroke on a 16-token document;
2. mid-document edit at token 500 against the cold prefill;
3. greedy: logitls's loop against `model.generate(do_sample=False)`, same prompt and length,
   with a check that the tokens are identical;
4. the keystroke through the language server (a client over stdio) against the engine call;
5. cold start: process start to `initialize` answered, and to the first completion;
6. peak RSS of the server with 10 open 2000-token documents;
7. every setting (exact float32; packed float32 on the fp32 and on the bf16 kernel; exact bfloat16)
   on the same document and prompt:
   cold prefill, keystroke, mid-document edit, greedy against model.generate; the fidelity of the
   quantised ones against exact float32 on fixed texts (fidelity.py); llama.cpp's server greedy on
   the same GGUF where llama-cpp-python is installed; and each goal printed as met or not.
"""
