import NIOCore
import Testing
@testable import TidingsServer

@Suite("Event loop count") struct ServerEventLoopsTests {
    @Test func countsTheCPUsInTheAllowedList() {
        #expect(ServerEventLoops.allowedCPUCount(status: "Name:\ttidings\nCpus_allowed_list:\t0\n") == 1)
        #expect(ServerEventLoops.allowedCPUCount(status: "Cpus_allowed_list:\t0-3,6\nMems_allowed_list:\t0\n") == 5)
        #expect(ServerEventLoops.allowedCPUCount(status: "Cpus_allowed_list:\t1,3,5-5\n") == 3)
    }

    @Test func malformedOrMissingListsAreNil() {
        #expect(ServerEventLoops.allowedCPUCount(status: "Name:\ttidings\n") == nil)
        #expect(ServerEventLoops.allowedCPUCount(status: "Cpus_allowed_list:\t3-1\n") == nil)
        #expect(ServerEventLoops.allowedCPUCount(status: "Cpus_allowed_list:\tx\n") == nil)
        #expect(ServerEventLoops.allowedCPUCount(status: "Cpus_allowed_list:\t\n") == nil)
    }

    @Test func oneLoopPerAllowedCPUUnlessOverridden() {
        let pinned = "Cpus_allowed_list:\t0\n"
        #expect(ServerEventLoops.threadCount(environment: [:], processStatus: pinned) == 1)
        #expect(ServerEventLoops.threadCount(environment: ["NIO_SINGLETON_GROUP_LOOP_COUNT": "3"], processStatus: pinned) == 3)
        #expect(ServerEventLoops.threadCount(environment: ["NIO_SINGLETON_GROUP_LOOP_COUNT": "0"], processStatus: pinned) == 1)
        // Never more loops than the machine (or its cgroup quota) has CPUs.
        #expect(ServerEventLoops.threadCount(environment: [:], processStatus: "Cpus_allowed_list:\t0-4095\n") == System.coreCount)
        #expect(ServerEventLoops.threadCount(environment: [:], processStatus: nil) == System.coreCount)
    }
}
