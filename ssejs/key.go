package ssejs

import (
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"strconv"

	"github.com/rocketqueue/sse"
)

// A Codec turns keys of type K into bytes and back, for key types other
// than strings and integers (see [WithCodec]). Encode must give distinct
// keys distinct bytes, and Decode(Encode(k)) must be k. The bytes are
// carried in a subject token and a KV key as base64url, so they may be
// anything; keep them under 1 KiB.
type Codec[K comparable] interface {
	Encode(key K) ([]byte, error)
	Decode(b []byte) (K, error)
}

// maxKeyBytes bounds a key's encoded bytes, so that a subject stays well
// under the server's control line limit (4 KiB by default).
const maxKeyBytes = 1 << 10

// Token returns the subject token and KV key that names key: "k" followed
// by the base64url encoding (no padding) of its bytes, so any key maps to
// a valid token: dots, "*", ">", spaces, non-ASCII bytes and the empty
// string included. It fails with an error wrapping [sse.ErrInvalidKey]
// for a key the codec cannot encode or whose bytes are longer than 1 KiB.
func Token[K comparable](c Codec[K], key K) (string, error) {
	b, err := c.Encode(key)
	if err != nil {
		return "", fmt.Errorf("%w: %v", sse.ErrInvalidKey, err)
	}
	if len(b) > maxKeyBytes {
		return "", fmt.Errorf("%w: %d bytes encoded, more than %d", sse.ErrInvalidKey, len(b), maxKeyBytes)
	}
	return "k" + base64.RawURLEncoding.EncodeToString(b), nil
}

// KeyOf is the inverse of [Token].
func KeyOf[K comparable](c Codec[K], token string) (K, error) {
	var zero K
	if len(token) == 0 || token[0] != 'k' {
		return zero, errors.New("ssejs: not a key token")
	}
	b, err := base64.RawURLEncoding.DecodeString(token[1:])
	if err != nil {
		return zero, err
	}
	return c.Decode(b)
}

// defaultCodec returns the codec for K's kind: a string's bytes, or an
// integer in decimal; nil for other kinds.
func defaultCodec[K comparable]() Codec[K] {
	t := reflect.TypeFor[K]()
	switch t.Kind() {
	case reflect.String:
		return stringCodec[K]{t}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return intCodec[K]{t}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return uintCodec[K]{t}
	}
	return nil
}

type stringCodec[K comparable] struct{ t reflect.Type }

func (stringCodec[K]) Encode(key K) ([]byte, error) {
	return []byte(reflect.ValueOf(key).String()), nil
}

func (c stringCodec[K]) Decode(b []byte) (K, error) {
	v := reflect.New(c.t).Elem()
	v.SetString(string(b))
	return v.Interface().(K), nil
}

type intCodec[K comparable] struct{ t reflect.Type }

func (intCodec[K]) Encode(key K) ([]byte, error) {
	return strconv.AppendInt(nil, reflect.ValueOf(key).Int(), 10), nil
}

func (c intCodec[K]) Decode(b []byte) (K, error) {
	var zero K
	n, err := strconv.ParseInt(string(b), 10, c.t.Bits())
	if err != nil {
		return zero, err
	}
	v := reflect.New(c.t).Elem()
	v.SetInt(n)
	return v.Interface().(K), nil
}

type uintCodec[K comparable] struct{ t reflect.Type }

func (uintCodec[K]) Encode(key K) ([]byte, error) {
	return strconv.AppendUint(nil, reflect.ValueOf(key).Uint(), 10), nil
}

func (c uintCodec[K]) Decode(b []byte) (K, error) {
	var zero K
	n, err := strconv.ParseUint(string(b), 10, c.t.Bits())
	if err != nil {
		return zero, err
	}
	v := reflect.New(c.t).Elem()
	v.SetUint(n)
	return v.Interface().(K), nil
}
