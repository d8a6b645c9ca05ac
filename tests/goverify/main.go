// Command goverify checks Sada's receipts and signed checkpoints with Go's own
// implementations of C2SP signed notes and RFC 9162 proofs
// (golang.org/x/mod/sumdb/note and golang.org/x/mod/sumdb/tlog), so that the
// formats are proven readable by code Sada did not write.
//
// Usage:
//
//	goverify note KEY FILE         a signed checkpoint; prints origin, size, root
//	goverify receipt KEY FILE      a receipt (JSON): signature, record, inclusion proof
//	goverify consistency KEY FILE  {"old": note, "new": note, "proof": [base64...]}
//
// KEY is a verifier key (name+hash+base64). Exit status 0: verified; 1: not.
package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type checkpoint struct {
	Origin string
	Size   int64
	Root   tlog.Hash
}

// openCheckpoint verifies the note's signature and parses its C2SP tlog-checkpoint body.
func openCheckpoint(key string, msg []byte) (checkpoint, error) {
	v, err := note.NewVerifier(key)
	if err != nil {
		return checkpoint{}, fmt.Errorf("verifier key: %w", err)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return checkpoint{}, fmt.Errorf("signed note: %w", err)
	}
	lines := strings.Split(strings.TrimSuffix(n.Text, "\n"), "\n")
	if len(lines) < 3 {
		return checkpoint{}, errors.New("checkpoint: fewer than three lines")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return checkpoint{}, fmt.Errorf("checkpoint: bad tree size %q", lines[1])
	}
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		return checkpoint{}, fmt.Errorf("checkpoint: bad root hash: %w", err)
	}
	return checkpoint{lines[0], size, root}, nil
}

func hashes(list []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(list))
	for i, s := range list {
		h, err := tlog.ParseHash(s)
		if err != nil {
			return nil, fmt.Errorf("proof hash %d: %w", i, err)
		}
		out[i] = h
	}
	return out, nil
}

type receipt struct {
	Partition      int64    `json:"partition"`
	LeafIndex      int64    `json:"leaf_index"`
	Record         string   `json:"record"`
	TreeSize       int64    `json:"tree_size"`
	InclusionProof []string `json:"inclusion_proof"`
	Checkpoint     string   `json:"checkpoint"`
}

func checkReceipt(key string, data []byte) (string, error) {
	var r receipt
	if err := json.Unmarshal(data, &r); err != nil {
		return "", fmt.Errorf("receipt: %w", err)
	}
	c, err := openCheckpoint(key, []byte(r.Checkpoint))
	if err != nil {
		return "", err
	}
	if !strings.HasSuffix(c.Origin, "/archive/"+strconv.FormatInt(r.Partition, 10)) {
		return "", fmt.Errorf("checkpoint origin %q is not partition %d", c.Origin, r.Partition)
	}
	if c.Size != r.TreeSize {
		return "", fmt.Errorf("receipt says tree size %d, checkpoint %d", r.TreeSize, c.Size)
	}
	record, err := base64.StdEncoding.DecodeString(r.Record)
	if err != nil {
		return "", fmt.Errorf("record: %w", err)
	}
	proof, err := hashes(r.InclusionProof)
	if err != nil {
		return "", err
	}
	if err := tlog.CheckRecord(proof, c.Size, c.Root, r.LeafIndex, tlog.RecordHash(record)); err != nil {
		return "", fmt.Errorf("inclusion proof: %w", err)
	}
	return fmt.Sprintf("receipt ok: leaf %d of %s (size %d)", r.LeafIndex, c.Origin, c.Size), nil
}

type consistency struct {
	Old   string   `json:"old"`
	New   string   `json:"new"`
	Proof []string `json:"proof"`
}

func checkConsistency(key string, data []byte) (string, error) {
	var in consistency
	if err := json.Unmarshal(data, &in); err != nil {
		return "", fmt.Errorf("input: %w", err)
	}
	old, err := openCheckpoint(key, []byte(in.Old))
	if err != nil {
		return "", fmt.Errorf("old: %w", err)
	}
	cur, err := openCheckpoint(key, []byte(in.New))
	if err != nil {
		return "", fmt.Errorf("new: %w", err)
	}
	if old.Origin != cur.Origin {
		return "", fmt.Errorf("origins differ: %q and %q", old.Origin, cur.Origin)
	}
	proof, err := hashes(in.Proof)
	if err != nil {
		return "", err
	}
	if err := tlog.CheckTree(proof, cur.Size, cur.Root, old.Size, old.Root); err != nil {
		return "", fmt.Errorf("consistency proof: %w", err)
	}
	return fmt.Sprintf("consistent: %s size %d -> %d", cur.Origin, old.Size, cur.Size), nil
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: goverify note|receipt|consistency KEY FILE")
		os.Exit(2)
	}
	data, err := os.ReadFile(os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	key := strings.TrimSpace(os.Args[2])
	var out string
	switch os.Args[1] {
	case "note":
		var c checkpoint
		c, err = openCheckpoint(key, data)
		out = fmt.Sprintf("%s\n%d\n%s", c.Origin, c.Size, c.Root)
	case "receipt":
		out, err = checkReceipt(key, data)
	case "consistency":
		out, err = checkConsistency(key, data)
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
	if err != nil {
		fmt.Println("FAILED:", err)
		os.Exit(1)
	}
	fmt.Println(out)
}
