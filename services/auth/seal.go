package auth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// KeySealer encrypts the signing keys' private halves at rest with
// AES-256-GCM under a key from the environment (AUTH_KEY_ENCRYPTION_KEY).
// The key id is the additional data: a sealed key copied into another
// row does not open.
type KeySealer struct{ aead cipher.AEAD }

// sealedPrefix marks a sealed private key in the store; the rest is
// base64 of nonce ‖ ciphertext.
const sealedPrefix = "aes256gcm:"

// ParseKeySealer returns a sealer for a base64-encoded 32-byte key.
func ParseKeySealer(encoded string) (*KeySealer, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(encoded))
	if err != nil || len(key) != 32 {
		return nil, errors.New("want 32 random bytes, base64-encoded (head -c 32 /dev/urandom | base64)")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &KeySealer{aead: aead}, nil
}

// Seal encrypts the private key of kid for the store.
func (s *KeySealer) Seal(kid, privateKey string) string {
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	return sealedPrefix + base64.StdEncoding.EncodeToString(s.aead.Seal(nonce, nonce, []byte(privateKey), []byte(kid)))
}

// Open decrypts what Seal stored for kid. A key stored in clear (before
// keys were sealed) or sealed under another encryption key is an error.
func (s *KeySealer) Open(kid, stored string) (string, error) {
	encoded, ok := strings.CutPrefix(stored, sealedPrefix)
	if !ok {
		return "", errors.New("stored unencrypted")
	}
	b, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil || len(b) < s.aead.NonceSize() {
		return "", errors.New("sealed key is not valid base64 of nonce and ciphertext")
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, b[:n], b[n:], []byte(kid))
	if err != nil {
		return "", fmt.Errorf("does not open with AUTH_KEY_ENCRYPTION_KEY (another key, or another row's): %w", err)
	}
	return string(plain), nil
}
