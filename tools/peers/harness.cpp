// mb_peer_harness: runs a token list through an engine's libllama (bitnet.cpp's 2024 llama.cpp
// fork, or llama.cpp as vendored by llama-cpp-python) and writes what minibit needs to compare
// against it: every position's logits and every named tensor the engine's eval callback sees.
//
//   mb_peer_harness eval MODEL.gguf OUT_DIR --tokens 1,2,3 [--mode batch|seq] [--threads N]
//                   [--no-tensors] [--kv f16|f32] [--flash-attn default|on|off]
//   mb_peer_harness quantize IN.gguf OUT.gguf FTYPE NTHREAD [EMBD_TYPE]
//
// eval writes, in OUT_DIR:
//   logits.f32     float32 [n_tokens, n_vocab], row i = the logits after token i
//   tensors.bin    the named tensors, each as contiguous float32 in ggml order (ne0 fastest)
//   tensors.tsv    one line per tensor: name, ggml type, ne0..ne3, byte offset, decode call
//   info.txt       key=value lines: api, n_vocab, n_tokens, mode, threads, kv, flash_attn
// --mode batch evaluates all tokens in one llama_decode; seq evaluates them one per call (the
// KV cache carries the context), as a generation loop does.  tools/peers/peers.py turns this
// into a minibit dump (docs/oracle.md).
//
// quantize calls llama_model_quantize (FTYPE: the llama_ftype number, e.g. 36 TQ1_0, 37 TQ2_0,
// 40 I2_S in bitnet.cpp's fork; NTHREAD: quantizer threads, 0 = the library's default;
// EMBD_TYPE: a ggml type number for token_embd and output, as llama-quantize's
// --token-embedding-type / --output-tensor-type, e.g. 1 = F16; default: the library's choice).
//
// The two libllama APIs differ in names only for what this program uses; the compile line
// picks one with -DMB_API_2024 (bitnet.cpp's Oct-2024 fork) or nothing (llama.cpp 2026).

#include "llama.h"
#include "ggml.h"
#include "ggml-backend.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

// ---- the compat layer -------------------------------------------------------------------------
#ifdef MB_API_2024
static const char * mb_api = "llama.cpp 2024 (bitnet.cpp fork)";
static llama_model * mb_load(const char * path) {
    return llama_load_model_from_file(path, llama_model_default_params());
}
static llama_context * mb_context(llama_model * m, llama_context_params p) {
    return llama_new_context_with_model(m, p);
}
static int mb_n_vocab(const llama_model * m) { return llama_n_vocab(m); }
static void mb_free_model(llama_model * m) { llama_free_model(m); }
static void mb_clear(llama_context * ctx) { llama_kv_cache_clear(ctx); }
static void mb_flash_attn(llama_context_params & p, int v) {
    if (v >= 0) p.flash_attn = v != 0;
}
#else
static const char * mb_api = "llama.cpp 2026";
static llama_model * mb_load(const char * path) {
    return llama_model_load_from_file(path, llama_model_default_params());
}
static llama_context * mb_context(llama_model * m, llama_context_params p) {
    return llama_init_from_model(m, p);
}
static int mb_n_vocab(const llama_model * m) {
    return llama_vocab_n_tokens(llama_model_get_vocab(m));
}
static void mb_free_model(llama_model * m) { llama_model_free(m); }
static void mb_clear(llama_context * ctx) { llama_memory_clear(llama_get_memory(ctx), true); }
static void mb_flash_attn(llama_context_params & p, int v) {
    if (v >= 0) p.flash_attn_type = v ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
}
#endif

// ---- the eval callback ------------------------------------------------------------------------
struct Dump {
    FILE * bin = nullptr;
    FILE * tsv = nullptr;
    long offset = 0;
    int call = 0;        // which llama_decode the tensors come from
    bool enabled = true;
    std::vector<float> buf;
};

// The tensors minibit names: "<stage>-<layer>" and the three outside the blocks.  ggml's own
// derived names ("... (view)", "... (reshaped)", "node_12") are skipped.
static bool wanted(const char * name) {
    if (!name[0] || strchr(name, ' ') || strchr(name, '('))
        return false;
    if (!strcmp(name, "inp_embd") || !strcmp(name, "result_norm") || !strcmp(name, "result_output"))
        return true;
    const char * dash = strrchr(name, '-');
    if (!dash || dash == name || !dash[1])
        return false;
    for (const char * c = dash + 1; *c; ++c)
        if (*c < '0' || *c > '9') return false;
    return true;
}

// The token embedding rows: named "inp_embd" in the 2024 graph; in 2026 "inp_embd" is the
// (unused) input for embeddings given directly, and the rows are an unnamed get_rows.
static bool is_embd_rows(const struct ggml_tensor * t) {
    return t->op == GGML_OP_GET_ROWS && t->src[0] && !strcmp(t->src[0]->name, "token_embd.weight");
}

static bool eval_cb(struct ggml_tensor * t, bool ask, void * user) {
    Dump * d = (Dump *) user;
    const bool rows = !wanted(t->name) && is_embd_rows(t);
    const char * name = rows ? "inp_embd" : t->name;
    bool want = d->enabled && (t->type == GGML_TYPE_F32 || t->type == GGML_TYPE_F16) &&
                (rows || wanted(t->name));
    if (ask)
        return want;
    if (!want)
        return true;
    const int64_t n = ggml_nelements(t);
    d->buf.resize((size_t) n);
    std::vector<uint8_t> raw;
    const uint8_t * base = (const uint8_t *) t->data;
    if (!ggml_backend_buffer_is_host(t->buffer)) {              // not on a CPU run; kept general
        raw.resize(ggml_nbytes(t));
        ggml_backend_tensor_get(t, raw.data(), 0, raw.size());
        base = raw.data();
    }
    size_t k = 0;
    for (int64_t i3 = 0; i3 < t->ne[3]; ++i3)
        for (int64_t i2 = 0; i2 < t->ne[2]; ++i2)
            for (int64_t i1 = 0; i1 < t->ne[1]; ++i1)
                for (int64_t i0 = 0; i0 < t->ne[0]; ++i0) {
                    const uint8_t * p = base + i0 * t->nb[0] + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3];
                    if (t->type == GGML_TYPE_F32) {
                        float v; memcpy(&v, p, 4); d->buf[k++] = v;
                    } else {
                        ggml_fp16_t h; memcpy(&h, p, 2); d->buf[k++] = ggml_fp16_to_fp32(h);
                    }
                }
    fwrite(d->buf.data(), 4, (size_t) n, d->bin);
    fprintf(d->tsv, "%s\t%s\t%lld\t%lld\t%lld\t%lld\t%ld\t%lld\t%d\n", name, ggml_type_name(t->type),
            (long long) t->ne[0], (long long) t->ne[1], (long long) t->ne[2], (long long) t->ne[3],
            d->offset, (long long) n * 4, d->call);
    d->offset += (long) n * 4;
    return true;
}

static void quiet_log(enum ggml_log_level level, const char * text, void *) {
    if (level == GGML_LOG_LEVEL_ERROR || getenv("MB_PEER_VERBOSE"))
        fputs(text, stderr);
}

static int die(const char * msg, const char * arg = "") {
    fprintf(stderr, "mb_peer_harness: %s%s\n", msg, arg);
    return 1;
}

static std::vector<llama_token> parse_tokens(const char * s) {
    std::vector<llama_token> out;
    while (*s) {
        char * end;
        long v = strtol(s, &end, 10);
        if (end == s) { out.clear(); return out; }
        out.push_back((llama_token) v);
        s = *end == ',' ? end + 1 : end;
    }
    return out;
}

static int cmd_quantize(int argc, char ** argv) {
    if (argc != 6 && argc != 7)
        return die("usage: quantize IN.gguf OUT.gguf FTYPE NTHREAD [EMBD_TYPE]");
    llama_model_quantize_params qp = llama_model_quantize_default_params();
    qp.ftype = (enum llama_ftype) atoi(argv[4]);
    qp.nthread = atoi(argv[5]);
    if (argc == 7) {
        qp.token_embedding_type = (enum ggml_type) atoi(argv[6]);
        qp.output_tensor_type = qp.token_embedding_type;
    }
    uint32_t rc = llama_model_quantize(argv[2], argv[3], &qp);
    if (rc != 0)
        return die("llama_model_quantize failed for ", argv[2]);
    return 0;
}

static int cmd_eval(int argc, char ** argv) {
    if (argc < 4)
        return die("usage: eval MODEL.gguf OUT_DIR --tokens 1,2,3 [--mode batch|seq] [--threads N] "
                   "[--no-tensors] [--kv f16|f32] [--flash-attn default|on|off]");
    const char * model_path = argv[2];
    std::string out = argv[3];
    std::vector<llama_token> tokens;
    std::string mode = "batch", kv = "f16", fa = "default";
    int threads = 1;
    bool tensors = true;
    for (int i = 4; i < argc; ++i) {
        std::string a = argv[i];
        bool has = i + 1 < argc;
        if (a == "--tokens" && has) tokens = parse_tokens(argv[++i]);
        else if (a == "--mode" && has) mode = argv[++i];
        else if (a == "--threads" && has) threads = atoi(argv[++i]);
        else if (a == "--kv" && has) kv = argv[++i];
        else if (a == "--flash-attn" && has) fa = argv[++i];
        else if (a == "--no-tensors") tensors = false;
        else return die("unknown or incomplete argument ", argv[i]);
    }
    if (tokens.empty()) return die("--tokens: give a comma-separated list of token ids");
    if (mode != "batch" && mode != "seq") return die("--mode takes batch or seq, not ", mode.c_str());
    if (kv != "f16" && kv != "f32") return die("--kv takes f16 or f32, not ", kv.c_str());
    if (fa != "default" && fa != "on" && fa != "off") return die("--flash-attn takes default, on or off");
    if (threads < 1) return die("--threads must be >= 1");

    llama_model * model = mb_load(model_path);
    if (!model) return die("could not load ", model_path);
    const int n_vocab = mb_n_vocab(model);
    const int n = (int) tokens.size();
    for (llama_token t : tokens)
        if (t < 0 || t >= n_vocab) return die("token id out of the vocabulary");

    Dump d;
    d.enabled = tensors;
    std::string bin_path = out + "/tensors.bin", tsv_path = out + "/tensors.tsv";
    d.bin = fopen(bin_path.c_str(), "wb");
    d.tsv = fopen(tsv_path.c_str(), "w");
    if (!d.bin || !d.tsv) return die("cannot write in ", out.c_str());

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) n;
    cp.n_batch = (uint32_t) n;
    cp.n_ubatch = (uint32_t) n;
    cp.n_seq_max = 1;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.cb_eval = eval_cb;
    cp.cb_eval_user_data = &d;
    cp.type_k = kv == "f16" ? GGML_TYPE_F16 : GGML_TYPE_F32;
    cp.type_v = cp.type_k;
    mb_flash_attn(cp, fa == "default" ? -1 : fa == "on" ? 1 : 0);
    llama_context * ctx = mb_context(model, cp);
    if (!ctx) return die("could not create a context for ", model_path);
    mb_clear(ctx);

    std::vector<float> logits((size_t) n * n_vocab);
    const int per_call = mode == "batch" ? n : 1;
    llama_batch batch = llama_batch_init(per_call, 0, 1);
    for (int start = 0; start < n; start += per_call) {
        batch.n_tokens = per_call;
        for (int j = 0; j < per_call; ++j) {
            batch.token[j] = tokens[start + j];
            batch.pos[j] = start + j;
            batch.n_seq_id[j] = 1;
            batch.seq_id[j][0] = 0;
            batch.logits[j] = 1;
        }
        d.call = start / per_call;
        if (llama_decode(ctx, batch) != 0) return die("llama_decode failed on ", model_path);
        for (int j = 0; j < per_call; ++j) {
            const float * row = llama_get_logits_ith(ctx, j);
            if (!row) return die("no logits returned");
            memcpy(&logits[(size_t) (start + j) * n_vocab], row, sizeof(float) * n_vocab);
        }
    }
    llama_batch_free(batch);
    fclose(d.bin);
    fclose(d.tsv);

    std::string lp = out + "/logits.f32";
    FILE * f = fopen(lp.c_str(), "wb");
    if (!f || fwrite(logits.data(), sizeof(float), logits.size(), f) != logits.size())
        return die("cannot write ", lp.c_str());
    fclose(f);
    std::string ip = out + "/info.txt";
    f = fopen(ip.c_str(), "w");
    if (!f) return die("cannot write ", ip.c_str());
    fprintf(f, "api=%s\nn_vocab=%d\nn_tokens=%d\nmode=%s\nthreads=%d\nkv=%s\nflash_attn=%s\n",
            mb_api, n_vocab, n, mode.c_str(), threads, kv.c_str(), fa.c_str());
    fprintf(f, "system_info=%s\n", llama_print_system_info());
    fclose(f);

    llama_free(ctx);
    mb_free_model(model);
    return 0;
}

int main(int argc, char ** argv) {
    llama_log_set(quiet_log, nullptr);
    llama_backend_init();
    int rc;
    if (argc >= 2 && !strcmp(argv[1], "eval")) rc = cmd_eval(argc, argv);
    else if (argc >= 2 && !strcmp(argv[1], "quantize")) rc = cmd_quantize(argc, argv);
    else rc = die("usage: mb_peer_harness eval|quantize ... (see the top of harness.cpp)");
    llama_backend_free();
    return rc;
}
