package gateway

import "unsafe"

// unsafeString views b as a string without copying. The string is only valid
// while b is unchanged: callers use it for classification and clone what
// they keep.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}
