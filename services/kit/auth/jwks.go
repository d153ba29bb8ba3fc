package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"errors"
	"fmt"
)

// The token contract between the auth service, which signs, and every
// service that verifies (DESIGN §2).
const (
	// Algorithm is the only signing algorithm accepted: ECDSA P-256 SHA-256.
	Algorithm = "ES256"
	// Issuer is the iss claim of every access token.
	Issuer = "meshop-auth"
	// Audience is the aud claim of every access token.
	Audience = "meshop"
	// JWKSPath is where the auth service serves its public keys.
	JWKSPath = "/auth/jwks"
	// Service is the auth service's mesh name.
	Service = "auth"
)

// JWKS is a JSON Web Key Set (RFC 7517) of public signing keys.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// JWK is one public key. Only EC P-256 keys for ES256 are produced and
// accepted.
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	Kid string `json:"kid"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
}

// NewJWK describes pub as the signing key kid.
func NewJWK(kid string, pub *ecdsa.PublicKey) (JWK, error) {
	if pub.Curve != elliptic.P256() {
		return JWK{}, errors.New("auth: JWK: only P-256 keys are supported")
	}
	raw, err := pub.Bytes() // 0x04 || X || Y, each 32 bytes
	if err != nil {
		return JWK{}, fmt.Errorf("auth: JWK: %w", err)
	}
	enc := base64.RawURLEncoding
	return JWK{
		Kty: "EC", Crv: "P-256", Kid: kid, Use: "sig", Alg: Algorithm,
		X: enc.EncodeToString(raw[1:33]), Y: enc.EncodeToString(raw[33:65]),
	}, nil
}

// PublicKey returns the key k describes. A key of another type, curve or
// algorithm, or a point that is not on the curve, is an error.
func (k JWK) PublicKey() (*ecdsa.PublicKey, error) {
	if k.Kty != "EC" || k.Crv != "P-256" {
		return nil, fmt.Errorf("auth: JWK %q: kty %q crv %q, want EC P-256", k.Kid, k.Kty, k.Crv)
	}
	if k.Alg != "" && k.Alg != Algorithm {
		return nil, fmt.Errorf("auth: JWK %q: alg %q, want %s", k.Kid, k.Alg, Algorithm)
	}
	if k.Use != "" && k.Use != "sig" {
		return nil, fmt.Errorf("auth: JWK %q: use %q, want sig", k.Kid, k.Use)
	}
	x, errX := base64.RawURLEncoding.DecodeString(k.X)
	y, errY := base64.RawURLEncoding.DecodeString(k.Y)
	if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
		return nil, fmt.Errorf("auth: JWK %q: x and y must be 32-byte base64url values", k.Kid)
	}
	raw := append(append([]byte{4}, x...), y...)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw) // checks the point is on the curve
	if err != nil {
		return nil, fmt.Errorf("auth: JWK %q: %w", k.Kid, err)
	}
	return pub, nil
}

// KeySource fetches the current JWKS. Every service but auth uses the auth
// service's gRPC client (services/auth/client), whose *Client is one.
type KeySource interface {
	JWKS(ctx context.Context) (JWKS, error)
}

// KeySourceFunc adapts a function to KeySource.
type KeySourceFunc func(ctx context.Context) (JWKS, error)

// JWKS calls f.
func (f KeySourceFunc) JWKS(ctx context.Context) (JWKS, error) { return f(ctx) }
