#!/usr/bin/env python3
"""Write tests/fixtures/gguf/kit-base.gguf: the demo kit's base model as llama.cpp would
convert it (f16 weights, q/k rows permuted as convert_hf_to_gguf.py permutes them, the
byte-level BPE vocabulary as tokenizer.ggml.* arrays, the chat template), for the browser's
GGUF test: imported in the page, it must give the base model's greedy tokens exactly.

Dev-only (needs gguf-py, numpy and safetensors, e.g. /opt/refvenv):

    /opt/refvenv/bin/python tools/make_kit_gguf.py [--kit demo] [--out tests/fixtures/gguf/kit-base.gguf]
"""

import argparse
import json
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, TokenType
from safetensors.numpy import load_file


def permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute: rotate-half rows → interleaved pairs."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--kit', default='demo')
    ap.add_argument('--out', default='tests/fixtures/gguf/kit-base.gguf')
    a = ap.parse_args()
    src = Path(a.kit) / 'base'
    config = json.loads((src / 'config.json').read_text())
    tok = json.loads((src / 'tokenizer.json').read_text())
    tok_config = json.loads((src / 'tokenizer_config.json').read_text())
    tensors = load_file(src / 'model.safetensors')

    w = GGUFWriter(a.out, 'llama')
    w.add_name('moegraft demo kit base')
    w.add_block_count(config['num_hidden_layers'])
    w.add_context_length(config['max_position_embeddings'])
    w.add_embedding_length(config['hidden_size'])
    w.add_feed_forward_length(config['intermediate_size'])
    w.add_head_count(config['num_attention_heads'])
    w.add_head_count_kv(config['num_key_value_heads'])
    w.add_layer_norm_rms_eps(config['rms_norm_eps'])
    w.add_rope_freq_base(config['rope_parameters']['rope_theta'])
    w.add_vocab_size(config['vocab_size'])

    vocab = tok['model']['vocab']
    special = {t['id']: t['content'] for t in tok['added_tokens']}
    tokens = [None] * config['vocab_size']
    for text, i in vocab.items():
        tokens[i] = text
    for i, text in special.items():
        tokens[i] = text
    assert all(t is not None for t in tokens), 'holes in the vocabulary'
    w.add_tokenizer_model('gpt2')
    w.add_tokenizer_pre('gpt2')
    w.add_token_list(tokens)
    w.add_token_types([TokenType.CONTROL if i in special else TokenType.NORMAL for i in range(len(tokens))])
    merges = tok['model']['merges']
    w.add_token_merges([m if isinstance(m, str) else ' '.join(m) for m in merges])
    w.add_eos_token_id(config['eos_token_id'])
    w.add_pad_token_id(config['pad_token_id'])
    w.add_add_bos_token(False)
    w.add_chat_template(tok_config['chat_template'])

    n_head, n_kv = config['num_attention_heads'], config['num_key_value_heads']
    names = {
        'self_attn.q_proj': 'attn_q', 'self_attn.k_proj': 'attn_k', 'self_attn.v_proj': 'attn_v',
        'self_attn.o_proj': 'attn_output', 'mlp.gate_proj': 'ffn_gate', 'mlp.up_proj': 'ffn_up',
        'mlp.down_proj': 'ffn_down', 'input_layernorm': 'attn_norm', 'post_attention_layernorm': 'ffn_norm',
    }
    w.add_tensor('token_embd.weight', tensors['model.embed_tokens.weight'].astype(np.float16))
    for layer in range(config['num_hidden_layers']):
        for hf, gg in names.items():
            t = tensors[f'model.layers.{layer}.{hf}.weight']
            if hf == 'self_attn.q_proj':
                t = permute(t, n_head)
            elif hf == 'self_attn.k_proj':
                t = permute(t, n_kv)
            # Norms are f32 in llama.cpp's files; matrices stay f16.
            w.add_tensor(f'blk.{layer}.{gg}.weight', t.astype(np.float32 if t.ndim == 1 else np.float16))
    w.add_tensor('output_norm.weight', tensors['model.norm.weight'].astype(np.float32))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f'wrote {a.out} ({Path(a.out).stat().st_size} bytes)')


if __name__ == '__main__':
    main()
