// The header holds everything; SwiftPM needs a source file per C target.
