// Package eventjson decodes the body of a publish request into events,
// without reflection: publishing is the server's hottest path, and
// encoding/json's decoding of the envelope was most of its CPU.
//
// The contract:
//   - A body is one event object, or a non-empty array of them, and nothing
//     else but JSON whitespace around it. An event is {"type": string or
//     null, "data": any JSON value}; "data" is required, a null or missing
//     "type" is the empty type, and the type must pass store.ValidateType.
//   - It accepts exactly the bodies encoding/json accepts under that
//     grammar (decoding with DisallowUnknownFields), with three deliberate
//     exceptions, where it is stricter: keys are matched byte for byte
//     ("Data" is not "data"), a key may appear only once in an event, and
//     data may nest at most 64 levels. The body must be valid UTF-8.
//   - Each event's Data is its value compacted as json.Compact does it, so
//     that it is one line of JSON however it was sent. Its Type is the
//     string unescaped as encoding/json unescapes it (an unpaired surrogate
//     becomes U+FFFD).
//   - Every error it returns matches ErrMalformed (errors.Is), and its text
//     is written for the client who sent the body: what is wrong, and at
//     which byte or in which event of a batch.
//
// FuzzDecodeEvents holds the decoder to encoding/json, body for body.
package eventjson
