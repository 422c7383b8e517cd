/// The gateway's version, reported as `tidings_build_info{version="…"} 1`.
public enum TidingsVersion {
    public static let current = "0.1.0"
}
