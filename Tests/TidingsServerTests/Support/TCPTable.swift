import Foundation

/// The kernel's table of IPv4 TCP sockets (Linux `/proc/net/tcp`), for the server's side of a
/// loopback connection: a client that is not reading cannot see the server close (the FIN waits
/// behind the data it has not read), the kernel can.
enum TCPTable {
    /// The state (`ESTABLISHED`, `FIN_WAIT1`, …) of the socket on 127.0.0.1:`localPort` connected
    /// to 127.0.0.1:`remotePort`; `nil` when there is none.
    static func state(localPort: Int, remotePort: Int) throws -> String? {
        // Read to the end: a /proc file has no size for a plain read to go by.
        let file = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/net/tcp"))
        defer { try? file.close() }
        let table = String(decoding: try file.readToEnd() ?? Data(), as: UTF8.self)
        for line in table.split(separator: "\n").dropFirst() {
            // sl local_address rem_address st …, addresses as hex IP:port
            let fields = line.split(separator: " ")
            guard fields.count > 3, port(fields[1]) == localPort, port(fields[2]) == remotePort else { continue }
            return names[String(fields[3])] ?? String(fields[3])
        }
        return nil
    }

    /// True while the socket's owner has not closed it (the peer may have).
    static func isOpen(_ state: String?) -> Bool {
        state == "ESTABLISHED" || state == "CLOSE_WAIT"
    }

    private static func port(_ address: Substring) -> Int? {
        address.split(separator: ":").last.flatMap { Int($0, radix: 16) }
    }

    private static let names = [
        "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
        "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
    ]
}
