// Package seal encrypts secret fields at rest (environment env_vars,
// session secret_env_vars, repository tokens) with AES-256-GCM.
//
// A sealed value is the text "aod1:<key id>:<base64url(nonce || ciphertext)>".
// The key id (8 hex chars derived from the key) lets a Sealer that holds the
// current key plus older ones open values written before a key rotation.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

const prefix = "aod1:"

// ErrUnknownKey is returned by Open when no configured key matches the
// value's key id.
var ErrUnknownKey = errors.New("seal: value was sealed with an unknown key")

// ErrMalformed is returned by Open for text that is not a sealed value.
var ErrMalformed = errors.New("seal: malformed sealed value")

type key struct {
	id   string
	aead cipher.AEAD
}

// Sealer seals with its current key and opens with the current or any old key.
type Sealer struct {
	current key
	byID    map[string]key
}

// New builds a Sealer from secret key material: the current key and zero or
// more old keys still accepted for Open. Any non-empty string is valid key
// material; it is stretched to 32 bytes with SHA-256.
func New(current string, old ...string) (*Sealer, error) {
	if current == "" {
		return nil, errors.New("seal: empty encryption key")
	}
	s := &Sealer{byID: map[string]key{}}
	for i, material := range append([]string{current}, old...) {
		material = strings.TrimSpace(material)
		if material == "" {
			continue
		}
		k, err := newKey(material)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			s.current = k
		}
		if _, dup := s.byID[k.id]; !dup {
			s.byID[k.id] = k
		}
	}
	return s, nil
}

func newKey(material string) (key, error) {
	sum := sha256.Sum256([]byte(material))
	block, err := aes.NewCipher(sum[:])
	if err != nil {
		return key{}, fmt.Errorf("seal: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return key{}, fmt.Errorf("seal: %w", err)
	}
	idSum := sha256.Sum256(append([]byte("aod-key-id\x00"), sum[:]...))
	return key{id: hex.EncodeToString(idSum[:4]), aead: aead}, nil
}

// KeyID returns the id of the current key (safe to log).
func (s *Sealer) KeyID() string { return s.current.id }

// Seal encrypts plaintext with the current key.
func (s *Sealer) Seal(plaintext []byte) (string, error) {
	nonce := make([]byte, s.current.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal: nonce: %w", err)
	}
	// The key id is authenticated as additional data.
	ct := s.current.aead.Seal(nonce, nonce, plaintext, []byte(s.current.id))
	return prefix + s.current.id + ":" + base64.RawURLEncoding.EncodeToString(ct), nil
}

// Open decrypts a value produced by Seal with the current or an old key.
func (s *Sealer) Open(sealed string) ([]byte, error) {
	rest, ok := strings.CutPrefix(sealed, prefix)
	if !ok {
		return nil, ErrMalformed
	}
	id, payload, ok := strings.Cut(rest, ":")
	if !ok {
		return nil, ErrMalformed
	}
	k, ok := s.byID[id]
	if !ok {
		return nil, ErrUnknownKey
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil || len(raw) < k.aead.NonceSize() {
		return nil, ErrMalformed
	}
	pt, err := k.aead.Open(nil, raw[:k.aead.NonceSize()], raw[k.aead.NonceSize():], []byte(id))
	if err != nil {
		return nil, fmt.Errorf("seal: open: %w", err)
	}
	return pt, nil
}

// Check seals and opens a probe value; /health uses it as the crypto check.
func (s *Sealer) Check() error {
	v, err := s.Seal([]byte("probe"))
	if err != nil {
		return err
	}
	pt, err := s.Open(v)
	if err != nil {
		return err
	}
	if string(pt) != "probe" {
		return errors.New("seal: round trip mismatch")
	}
	return nil
}

// LoadOrCreateKeyFile returns the key material stored in path, creating the
// file (mode 0600) with 32 random bytes when it does not exist. created
// reports whether a new key was generated. Concurrent first starts agree
// on one key: it is written to a synced temporary file and hard-linked into
// place (the data directory must support hard links).
func LoadOrCreateKeyFile(path string) (material string, created bool, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		material = strings.TrimSpace(string(b))
		if material == "" {
			return "", false, fmt.Errorf("seal: key file %s is empty", path)
		}
		return material, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", false, fmt.Errorf("seal: read key file: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", false, fmt.Errorf("seal: create key dir: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", false, fmt.Errorf("seal: generate key: %w", err)
	}
	material = base64.RawURLEncoding.EncodeToString(raw)
	// Write a complete, synced temporary file, then link it into place:
	// link fails if the key file exists (O_EXCL semantics), so starts that
	// race agree on the first key, and no reader ever sees a partial file.
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".encryption-key-*")
	if err != nil {
		return "", false, fmt.Errorf("seal: create key file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return "", false, fmt.Errorf("seal: create key file: %w", err)
	}
	if _, err := f.WriteString(material + "\n"); err != nil {
		f.Close()
		return "", false, fmt.Errorf("seal: write key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", false, fmt.Errorf("seal: sync key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", false, fmt.Errorf("seal: write key file: %w", err)
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) { // another process won the race
			return LoadOrCreateKeyFile(path)
		}
		return "", false, fmt.Errorf("seal: create key file: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // make the new name durable
		d.Close()
	}
	return material, true, nil
}
