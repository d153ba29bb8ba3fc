package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Hasher hashes passwords with argon2id and checks them in constant time.
// Hashes are PHC strings ($argon2id$v=19$m=...,t=...,p=...$salt$hash) that
// carry their own parameters, so raising the cost later keeps old hashes
// verifiable.
type Hasher struct {
	Memory  uint32 // KiB
	Time    uint32 // passes
	Threads uint8
	// dummy is a hash of nothing anyone knows, checked against when an
	// email is unknown so that such a login costs as much as a real one.
	dummy string
}

// DefaultHasher uses the OWASP argon2id baseline (19 MiB, 2 passes, 1
// thread): about 20-50 ms a hash.
func DefaultHasher() *Hasher { return NewHasher(19*1024, 2, 1) }

// NewHasher returns a hasher with the given cost.
func NewHasher(memoryKiB, passes uint32, threads uint8) *Hasher {
	h := &Hasher{Memory: memoryKiB, Time: passes, Threads: threads}
	h.dummy = h.Hash(rand.Text())
	return h
}

const (
	saltLen = 16
	keyLen  = 32
)

// Hash returns the PHC string of password with a fresh salt.
func (h *Hasher) Hash(password string) string {
	salt := make([]byte, saltLen)
	_, _ = rand.Read(salt) // crypto/rand never fails
	key := argon2.IDKey([]byte(password), salt, h.Time, h.Memory, h.Threads, keyLen)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, h.Memory, h.Time, h.Threads, enc.EncodeToString(salt), enc.EncodeToString(key))
}

// Check reports whether password matches encoded. An unparseable hash is
// an error, never a match.
func (h *Hasher) Check(password, encoded string) (bool, error) {
	p, err := parsePHC(encoded)
	if err != nil {
		return false, err
	}
	key := argon2.IDKey([]byte(password), p.salt, p.time, p.memory, p.threads, uint32(len(p.key)))
	return subtle.ConstantTimeCompare(key, p.key) == 1, nil
}

// CheckNobody spends the time of a Check on the dummy hash, for unknown
// emails: the answer and its timing match a wrong password.
func (h *Hasher) CheckNobody(password string) {
	_, _ = h.Check(password, h.dummy)
}

type phc struct {
	memory, time uint32
	threads      uint8
	salt, key    []byte
}

func parsePHC(encoded string) (phc, error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return phc{}, errors.New("password hash: not an argon2id PHC string")
	}
	var version int
	var p phc
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return phc{}, errors.New("password hash: unsupported argon2 version")
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.memory, &p.time, &p.threads); err != nil {
		return phc{}, fmt.Errorf("password hash: parameters: %w", err)
	}
	var err error
	if p.salt, err = base64.RawStdEncoding.DecodeString(parts[4]); err != nil {
		return phc{}, fmt.Errorf("password hash: salt: %w", err)
	}
	if p.key, err = base64.RawStdEncoding.DecodeString(parts[5]); err != nil || len(p.key) == 0 {
		return phc{}, errors.New("password hash: bad key")
	}
	return p, nil
}
