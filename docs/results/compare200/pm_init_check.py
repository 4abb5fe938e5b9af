"""Does a PM that has not been trained already sit below chance on the HH-RLHF check pool?
The base model with a fresh one-score head (seeds 0-4), scored as `cai reward` scores its checks;
and, for reference, the share of pairs whose human-preferred answer is the longer one."""
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from cai.models import resolve
from cai.train.pm import PreferenceModel
from cai.train.reward import human_accuracy

path = resolve("smollm2-135m")
tok = AutoTokenizer.from_pretrained(path)
tok.pad_token = tok.pad_token or tok.eos_token
for seed in range(5):
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32).eval()
    model.config.pad_token_id = tok.pad_token_id
    pm = PreferenceModel(model, tok, max_length=1024, batch_size=8)
    for src in ("hh-rlhf", "hhh"):
        r = human_accuracy(pm, src, limit=50, seed=0)
        print(f"seed {seed} {src}: {r['accuracy']:.2f} {r['ci95']}", flush=True)
